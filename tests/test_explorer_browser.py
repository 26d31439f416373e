"""The explorer page in a real browser: Debian's chromium, headless, driven by Selenium.

Nothing is downloaded: Selenium is given the system's chromedriver. Without a browser the
test is skipped with the command that installs one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from songspace.explorer import server  # noqa: E402
from tests.test_explorer import UPLOAD_LIMIT, open_explorer, running, tiny_run  # noqa: E402

INSTALL = "apt-get install -y chromium chromium-driver"


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.isfile(name) else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = _find(os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "/usr/bin/chromium")
    driver_path = _find(os.environ.get("CHROMEDRIVER", ""), "chromedriver", "/usr/bin/chromedriver")
    if not chromium or not driver_path:
        pytest.skip(f"no chromium/chromedriver for the browser test; install them with `{INSTALL}`")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_click_a_map_point_lists_its_neighbours(browser, tmp_path_factory):
    run = tiny_run(tmp_path_factory.mktemp("browser"))
    explorer = open_explorer(run)
    with running(server.create_app(explorer, UPLOAD_LIMIT, k=5)) as base:
        browser.get(base + "/")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.songspace.ready"))
        track = "high2"
        x, y = browser.execute_script("return window.songspace.screenPosition(arguments[0])", track)
        canvas = browser.find_element(By.ID, "map-overlay")
        # Selenium's offsets are from the element's centre
        ActionChains(browser).move_to_element_with_offset(
            canvas, int(x - canvas.size["width"] / 2), int(y - canvas.size["height"] / 2)).click().perform()
        WebDriverWait(browser, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours li")) == 5)
        items = browser.find_elements(By.CSS_SELECTOR, "#neighbours li")
        listed = [li.get_attribute("data-track-id") for li in items]
        assert listed == [n["track_id"] for n in explorer.neighbours(track, 5)["neighbours"]]
        assert browser.find_element(By.ID, "track-title").text == Path(
            run["tracks"].set_index("track_id").loc[track, "path"]).name
        assert browser.find_element(By.ID, "player").get_attribute("src").endswith(f"/audio/{track}")
        assert "80.0%" in browser.find_element(By.ID, "headline").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.grid td")) == 4
        shot = Path(os.environ.get("SONGSPACE_SCREENSHOT") or tmp_path_factory.mktemp("shots") / "explorer.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
