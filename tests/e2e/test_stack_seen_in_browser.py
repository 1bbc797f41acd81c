"""The monitoring dashboard in a real browser (Debian's headless Chromium through Selenium) against the running
e2e stack: every page renders its charts with live data and no console errors; screenshots are saved under
var/test-output/dashboard/. Runs after the learning-loop tests (file order), so the models page has a history."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from recsys.client import RecsysClient

OUT = Path(__file__).resolve().parents[2] / "var" / "test-output" / "dashboard"
# Charts that must show data on each page (the others may rightly be empty, e.g. errors on a healthy stack).
REQUIRED = {
    "overview": ["requests", "hop_p99", "hop_p50", "service_p99", "degraded"],
    "experiments": ["ctr", "impressions", "positions"],
    "drift": ["scores", "share"],
    "models": ["timeline"],
    "alerts": [],
}
TABLES_WITH_ROWS = {"overview": ["targets"], "experiments": ["variants"], "drift": ["windows"],
                    "models": ["served", "versions", "history"]}
POINTS_JS = """return [...document.querySelectorAll('.js-plotly-plot')].map(p => [p.id,
  (p.data || []).reduce((n, t) => n + (t.y || []).filter(v => v !== null && v !== undefined).length, 0)]);"""


def api(url: str, view: str) -> dict:
    with urllib.request.urlopen(f"{url}api/{view}", timeout=10) as resp:
        return json.loads(resp.read())


def wait_for(what: str, check, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def browser():
    for tool in ("chromium", "chromedriver"):
        assert shutil.which(tool), f"{tool} is missing: run `bash deploy/local/observability.sh install`"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1300"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def dashboard(stack) -> str:
    """The stack's dashboard once it has something to draw on every page: traffic with clicks, a scrape pair,
    a drift window."""
    url = stack.cfg.dashboard_url
    users = sorted(stack.interactions["user_id"].astype(str).unique())[:50]
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:
        for i in range(200):
            recs = client.recommend(users[i % len(users)], k=10)
            if i % 3 == 0 and recs.items:
                client.click(users[i % len(users)], recs.items[0].item_id, request_id=recs.request_id, position=0)
    wait_for("experiments with impressions", lambda: api(url, "experiments")["variants"])
    wait_for("an overview point with answers", lambda: any(api(url, "overview")["answers_per_s"]))
    wait_for("a drift window", lambda: api(url, "drift")["windows"], timeout_s=150)
    return url


@pytest.mark.parametrize("view", list(REQUIRED))
def test_page_renders_live_data_without_console_errors(browser, dashboard, view):
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{dashboard}{view}")
    WebDriverWait(browser, 30).until(lambda d: int(d.execute_script("return document.body.dataset.rendered || 0")))
    points = dict(browser.execute_script(POINTS_JS))
    OUT.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(OUT / f"{view}.png"))
    for chart in REQUIRED[view]:
        assert points.get(chart, 0) > 0, f"{view}: chart {chart!r} has no data ({points})"
    for table in TABLES_WITH_ROWS.get(view, []):
        rows = browser.execute_script(f"return document.querySelectorAll('#{table} tr').length")
        assert rows > 1, f"{view}: table {table!r} is empty"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"{view}: console errors {errors}"
    assert "update failed" not in browser.find_element("id", "status").text
