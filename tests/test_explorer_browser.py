"""The explorer page in a real browser: Debian's chromium, headless, driven by Selenium.

The library is the folder library of tests/test_explorer.py (ids are paths through folders
with spaces, `#`, `?`, `%` and non-ASCII names). Nothing is downloaded: Selenium is given the
system's chromedriver. Without a browser the test is skipped with the command that installs one.
"""
from __future__ import annotations

import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from songspace.explorer import export  # noqa: E402
from tests.conftest import write_tone  # noqa: E402
from tests.test_explorer import open_explorer, running, shared_run  # noqa: E402
from tests.test_explorer_lists import open_tagged, tagged_run  # noqa: E402

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


def audio_state(driver) -> dict:
    """The player's source and how far it got: readyState >= 1 once the file's header is read."""
    return driver.execute_script("const p = document.getElementById('player');"
                                 "return {src: p.src, ready: p.readyState, error: p.error && p.error.code};")


def wait_for_audio(driver) -> dict:
    WebDriverWait(driver, 30).until(lambda d: audio_state(d)["ready"] >= 1 or audio_state(d)["error"])
    state = audio_state(driver)
    assert state["error"] is None and state["ready"] >= 1, state
    return state


def click_track(driver, track: str) -> None:
    x, y = driver.execute_script("return window.songspace.screenPosition(arguments[0])", track)
    canvas = driver.find_element(By.ID, "map-overlay")
    # Selenium's offsets are from the element's centre
    ActionChains(driver).move_to_element_with_offset(
        canvas, int(x - canvas.size["width"] / 2), int(y - canvas.size["height"] / 2)).click().perform()


def listed(driver, n: int, where: str = "#neighbours") -> list[str]:
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, f"{where} li")) == n)
    return [li.get_attribute("data-track-id") for li in driver.find_elements(By.CSS_SELECTOR, f"{where} li")]


def source_id(driver) -> str:
    """The track id of the player's source (`/audio?id=...`)."""
    src = urllib.parse.urlsplit(audio_state(driver)["src"])
    assert src.path == "/audio", src
    return urllib.parse.parse_qs(src.query)["id"][0]


def test_click_a_map_point_lists_its_neighbours_and_plays_it(browser, tmp_path_factory, tmp_path):
    run = shared_run(tmp_path_factory)
    explorer = open_explorer(run)
    track = next(t for t in run["tracks"]["track_id"] if "#" in t and "?" in t and "%" in t)
    with running(explorer, k=5) as base:
        browser.get(base + "/")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.songspace.ready"))
        click_track(browser, track)
        assert listed(browser, 5) == [n["track_id"] for n in explorer.neighbours(track, 5)["neighbours"]]
        assert browser.find_element(By.ID, "track-title").text == Path(
            run["tracks"].set_index("track_id").loc[track, "path"]).name
        src = urllib.parse.urlsplit(wait_for_audio(browser)["src"])  # the file arrived and decoded
        assert src.path == "/audio" and urllib.parse.parse_qs(src.query) == {"id": [track]}
        assert "80.0%" in browser.find_element(By.ID, "headline").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.grid td")) == 4

        # an upload from the page itself is a same-origin POST the server accepts
        song = write_tone(tmp_path / "Ärger #2 50% ?.wav", freqs=(1800.0, 2700.0), seconds=1.5, seed=3)
        browser.find_element(By.ID, "upload-file").send_keys(str(song))
        WebDriverWait(browser, 30).until(
            lambda d: "nearest tracks listed" in d.find_element(By.ID, "upload-message").text)
        assert browser.find_element(By.ID, "upload-message").get_attribute("class") == ""
        assert len(listed(browser, 5)) == 5

        shot = Path(os.environ.get("SONGSPACE_SCREENSHOT") or tmp_path_factory.mktemp("shots") / "explorer.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")


def test_the_exported_page_plays_tracks_from_awkward_folders(browser, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    explorer = open_explorer(run)
    out = export.write_html(explorer, run["root"] / "plots" / "explorer.html", k=3)
    browser.get(out.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.songspace.ready"))
    track = next(t for t in run["tracks"]["track_id"] if "#" in t and "?" in t)
    browser.execute_script("window.songspace.select(arguments[0])", track)
    neighbours = listed(browser, 3)
    assert not browser.find_element(By.ID, "lists").is_displayed()  # radio and paths need the server
    assert not browser.find_element(By.ID, "judge").is_displayed()  # so does the judge view
    button = browser.find_element(By.CSS_SELECTOR, "#neighbours li button.play")
    button.click()
    src = wait_for_audio(browser)["src"]
    path = run["tracks"].set_index("track_id").loc[neighbours[0], "path"]
    assert Path(urllib.parse.unquote(urllib.parse.urlsplit(src).path)).resolve() == Path(path).resolve()


def test_radio_and_path_play_their_lists_in_order(browser, tmp_path_factory):
    run = tagged_run(tmp_path_factory)
    explorer = open_tagged(run)
    seed = run["ids"][0]  # "Été - Zoë", in "Zoë & Co/50% #1/0 Été #0 ?.wav"
    target = next(t for t in run["tracks"]["track_id"] if "#" in t and "?" in t and "%" in t)
    with running(explorer) as base:
        browser.get(base + "/")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.songspace.ready"))
        browser.find_element(By.ID, "search").send_keys("été")
        browser.find_element(By.CSS_SELECTOR, "#results li a").click()
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "track-title").text == "Été - Zoë")

        browser.find_element(By.ID, "radio-button").click()
        radio = [s["track_id"] for s in explorer.radio(seed, 30)["songs"]]
        assert listed(browser, len(radio), "#queue") == radio and radio[0] == seed
        browser.execute_script("document.getElementById('player').pause()")  # no real end meanwhile
        pos = browser.execute_script("return window.songspace.list().pos")
        assert 0 <= pos < len(radio) - 1 and source_id(browser) == radio[pos]
        browser.execute_script("document.getElementById('player').dispatchEvent(new Event('ended'))")
        assert source_id(browser) == radio[pos + 1]
        assert browser.find_element(By.CSS_SELECTOR, "#queue li.current").get_attribute(
            "data-track-id") == radio[pos + 1]
        wait_for_audio(browser)  # the next song's file arrived and decoded

        browser.find_element(By.ID, "path-target").send_keys(target)
        browser.find_element(By.ID, "path-button").click()
        path = [s["track_id"] for s in explorer.path(seed, target, 12)["songs"]]
        WebDriverWait(browser, 30).until(
            lambda d: d.find_element(By.ID, "queue-title").text.startswith("Path from Été - Zoë to "))
        assert listed(browser, len(path), "#queue") == path and path[0] == seed and path[-1] == target
        assert source_id(browser) == seed  # the path plays from its start
        assert browser.find_element(By.ID, "list-message").text == ""
