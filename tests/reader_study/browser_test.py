"""reader_study in a real browser: headless Chromium (Selenium) answers a 4-image study by click and key.

Needs Debian's `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver) and the
`selenium` package; skipped with that reason when they are missing. Talks only to 127.0.0.1.
"""
import json
import os
import shutil
import threading

import pytest

from jaxmedgan.reader_study import app as app_lib
from jaxmedgan.reader_study import db, report
from tests.reader_study import make_study, truths

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="browser test needs Chromium and chromedriver: apt-get install -y chromium chromium-driver")

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,1000")


@pytest.fixture()
def server(tmp_path):
    """(base URL, study folder) of a live server on a free 127.0.0.1 port, in a thread."""
    from werkzeug.serving import make_server

    study_dir = make_study(tmp_path, num=4)
    srv = make_server("127.0.0.1", 0, app_lib.create_app(study_dir), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.port}", study_dir
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    """Headless Chromium with a fresh profile; never Selenium Manager (the network is closed)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="browser test needs `pip install selenium`")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_reader_answers_in_chromium_and_admin_sees_the_accuracy(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, study_dir = server
    truth = truths(study_dir)
    wait = WebDriverWait(browser, 20)
    browser.get(base + "/")
    browser.find_element(By.ID, "name").send_keys("Dr. Browser")
    browser.find_element(By.ID, "start").click()
    wait.until(ec.url_contains("/r/"))
    personal_link = browser.current_url
    flip = {"real": "synthetic", "synthetic": "real"}
    # Scripted: right, right (keyboard), wrong (keyboard), right (click) -> accuracy 3/4.
    script = [("click", True), ("key", True), ("key", False), ("click", True)]
    expected = {}
    for k, (how, right) in enumerate(script, start=1):
        wait.until(ec.text_to_be_present_in_element((By.ID, "progress-text"), f"Image {k} of 4"))
        canvas = wait.until(ec.visibility_of_element_located((By.ID, "study-canvas")))  # JS window/level is live
        assert canvas.size["width"] > 0 and not browser.find_element(By.ID, "study-image").is_displayed()
        item = browser.find_element(By.NAME, "item_id").get_attribute("value")
        answer = truth[item] if right else flip[truth[item]]
        expected[item] = answer
        if k == 1:  # window/level slider moves the readout; typing R/F in the finding box does not answer
            level = browser.find_element(By.ID, "wl-level")
            level.click()
            level.send_keys(Keys.HOME)
            ActionChains(browser).send_keys(Keys.ARROW_RIGHT * 10).perform()
            assert browser.find_element(By.ID, "wl-readout").text == "L 10 / W 256"
            browser.find_element(By.ID, "finding").send_keys("r f nodule")
            assert f"Image {k} of 4" in browser.find_element(By.ID, "progress-text").text
        old = browser.find_element(By.ID, "answer-form")
        if how == "key":
            browser.find_element(By.TAG_NAME, "body").click()
            ActionChains(browser).send_keys("3").perform()  # confidence 3
            ActionChains(browser).send_keys("r" if answer == "real" else "f").perform()
        else:
            browser.find_element(By.ID, "answer-real" if answer == "real" else "answer-fake").click()
        wait.until(ec.staleness_of(old))
    wait.until(ec.presence_of_element_located((By.ID, "done")))
    browser.get(personal_link)  # resume link after finishing: still done
    assert browser.find_element(By.ID, "done").text.startswith("Thank you, Dr. Browser")

    conn = db.connect(os.path.join(study_dir, db.DB_NAME))
    admin_token = db.meta(conn)["admin_token"]
    rows = {r["item_id"]: dict(r) for r in db.answers(conn)}
    conn.close()
    assert {i: r["answer"] for i, r in rows.items()} == expected
    assert sorted(r["confidence"] for r in rows.values() if r["confidence"]) == [3, 3]
    assert [r["finding"] for r in rows.values() if r["finding"]] == ["r f nodule"]

    browser.get(f"{base}/admin/{admin_token}")
    row = browser.find_element(By.CSS_SELECTOR, "#readers tbody tr[data-reader-id]")
    assert row.find_element(By.CLASS_NAME, "name").text == "Dr. Browser"
    assert row.find_element(By.CLASS_NAME, "accuracy").text.startswith("0.750")
    out = report.write_report(study_dir)
    assert json.load(open(os.path.join(out, "report.json")))["readers"][0]["accuracy"] == 0.75
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
    assert errors == []  # no CSP violation or script error
