"""The judge view in a real browser (Debian's chromium, headless, Selenium) against the real
server: five judgements with the keyboard, one with the mouse, one skip; the CSV, counter and
agreement afterwards."""
from __future__ import annotations

import pytest

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from songspace import groundtruth  # noqa: E402
from tests.test_explorer import open_explorer, running, shared_run  # noqa: E402
from tests.test_explorer_browser import browser  # noqa: E402,F401  (the fixture)
from tests.test_judge import make_judge  # noqa: E402


def question(driver) -> dict:
    return driver.execute_script("return window.songspaceJudge.question()")


def answer_and_wait(driver, act) -> dict:
    """Do act(); wait for the next question; return the one answered."""
    asked = question(driver)
    act()
    WebDriverWait(driver, 30).until(lambda d: (question(d) or {}).get("id") not in (None, asked["id"]))
    return asked


def keys(driver, text: str) -> None:
    ActionChains(driver).send_keys(text).perform()


def test_judge_five_by_keyboard_one_by_mouse_and_skip_one(browser, tmp_path_factory, tmp_path):  # noqa: F811
    run = shared_run(tmp_path_factory)
    explorer = open_explorer(run)
    judge, splits = make_judge(explorer, run, tmp_path)
    with running(explorer, judge=judge) as base:
        browser.get(base + "/")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(
            "return window.songspaceJudge && window.songspaceJudge.ready"))
        assert browser.find_element(By.ID, "judge").is_displayed()
        name = browser.find_element(By.ID, "judge-annotator")
        name.send_keys("Zoë")
        browser.execute_script("document.activeElement.blur()")  # the change event; keys reach the view

        keys(browser, " ")  # space plays the three excerpts in turn, from the first
        playing = browser.execute_script("return window.songspaceJudge.playing()")
        assert playing["pos"] == 0 and playing["sequence"] and "/audio?id=" in playing["src"]
        keys(browser, " ")
        assert browser.execute_script("return window.songspaceJudge.playing()") is None

        picked = []
        for key in "12312":
            asked = answer_and_wait(browser, lambda: keys(browser, key))
            picked.append((asked, asked["songs"][int(key) - 1]))
        asked = answer_and_wait(browser, lambda: browser.find_element(
            By.CSS_SELECTOR, "#judge-songs li:nth-child(3) button.pick").click())
        picked.append((asked, asked["songs"][2]))
        answer_and_wait(browser, lambda: keys(browser, "s"))

        stats = judge.stats("Zoë")
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "judge").get_attribute("data-judged") == "6")
        text = browser.find_element(By.ID, "judge-stats").text
        browser.save_screenshot(str(tmp_path / "judge.png"))
        print(f"screenshot: {tmp_path / 'judge.png'}")
        agreement = stats["agreement"]
        assert text.startswith("6 judgements made (6 by Zoë)")
        assert f"the model agrees with {agreement['agree']} of 6" in text

    rows = judge.store.read()
    assert [(r["song1"], r["song2"], r["song3"], r["odd"]) for r in rows] == \
        [(*q["songs"], odd) for q, odd in picked]
    assert all(r["split"] == splits[r["song1"]] == splits[r["song2"]] == splits[r["song3"]] for r in rows)
    assert all(r["annotator"] == "Zoë" and float(r["seconds"]) >= 0 and r["chosen_by"] in ("uncertain", "random")
               for r in rows)
    parsed = groundtruth.parse_quartets(groundtruth.read_quartet_rows(judge.store.path),
                                        groundtruth.track_lookup(run["tracks"]))
    assert parsed.has_split and parsed.rows == 6
    assert [e["event"] for e in judge.store.read_log()].count("skip") == 1
