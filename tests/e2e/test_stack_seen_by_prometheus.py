"""A real Prometheus (Debian's package) scraping the running e2e stack: every process's target is up, and the
queries of the chart's Grafana dashboards run against what it scraped and return data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from recsys.client import RecsysClient
from recsys.common import children
from recsys.common.ports import free_port

DASHBOARDS = Path(__file__).resolve().parents[2] / "helm" / "recsys" / "dashboards"
NAMESPACE = "recsys-e2e"
METRIC = re.compile(r"\b(recsys_[a-z0-9_]+|ray_[a-z0-9_]+|up)\b")


def query(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check, timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}: {last}")


@pytest.fixture(scope="module")
def prometheus(stack, tmp_path_factory):
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: run `bash deploy/local/observability.sh install`"
    work = tmp_path_factory.mktemp("prometheus")
    jobs = [
        {"job_name": name, "scrape_interval": "1s", "scrape_timeout": "1s",
         "static_configs": [{"targets": [address], "labels": {"namespace": NAMESPACE}}]}
        for name, address in stack.cfg.metrics_targets().items()
    ]
    (work / "prometheus.yml").write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
    port = free_port()
    proc = children.spawn([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                          stdout=(work / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for("Prometheus ready", lambda: _ready(base))
        yield base
    finally:
        children.stop(proc)


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_every_process_is_scraped_and_up(stack, prometheus):
    def all_up():
        targets = query(prometheus, "/api/v1/targets")["activeTargets"]
        state = {t["labels"]["job"]: t["health"] for t in targets}
        return True if state and set(state.values()) == {"up"} and set(state) == set(stack.cfg.metrics_targets()) \
            else state
    wait_for("every target up", all_up)


def test_dashboard_queries_return_data(stack, prometheus):
    with RecsysClient(stack.gateway, timeout_s=2.0) as client:  # traffic while Prometheus watches
        users = sorted(stack.interactions["user_id"].astype(str).unique())[:30]
        for i in range(150):
            recs = client.recommend(users[i % len(users)], k=10)
            if i % 4 == 0 and recs.items:
                client.click(users[i % len(users)], recs.items[0].item_id, request_id=recs.request_id, position=0)
            time.sleep(0.05)
    time.sleep(5)  # a few scrapes after the traffic
    names = set(query(prometheus, "/api/v1/label/__name__/values"))
    failures, ran = [], 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$namespace", NAMESPACE).replace("$__rate_interval", "30s")
                        .replace("$__range", "5m").replace("$__interval", "5s"))
                result = query(prometheus, "/api/v1/query", query=expr)["result"]
                ran += 1
                missing = set(METRIC.findall(expr)) - names
                if not result and not missing:
                    failures.append(f"{path.stem} / {panel['title']}: {expr}")
    assert ran > 20
    assert not failures, "queries on scraped metrics that returned nothing:\n" + "\n".join(failures)
