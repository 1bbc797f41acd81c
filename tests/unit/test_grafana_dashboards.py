"""The Grafana dashboards the chart ships (helm/recsys/dashboards/*.json) and the metrics its alerts query.

Each dashboard has what Grafana and its sidecar need (a unique uid, title, schemaVersion, panels with gridPos,
type and targets with expr and refId, the `datasource` and `namespace` variables), the files are what
helm/tools/dashboards.py generates, and every metric a dashboard query or an alert expression names is one
the services export: the prometheus_client metrics of every service module (read from the registry), the
ranking replicas' Ray metrics (named as Ray's metrics agent exports them, with its `ray_` prefix), and `up`.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import HELM_DIR, K8S_VERSION, REPO, UMBRELLA, Helm, offline_helm  # noqa: E402

DASHBOARDS = sorted((HELM_DIR / UMBRELLA / "dashboards").glob("*.json"))
SERVICES = REPO / "services"
DATASOURCE = "${datasource}"
# Sample names of each metric type, by suffix (what a query can name).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are no function, keyword or label."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery windows
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    expr = re.sub(r"\boffset\s+\S+", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)\s*(\()?", expr):
        name, call = match.groups()
        if not call and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def variable_query_names(query: str) -> set[str]:
    """label_values(<selector>, <label>) reads the selector's metric; other variable queries are PromQL."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    return metric_names(match.group(1) if match else query)


def _ray_metric_names() -> set[str]:
    """The ranking replicas' Ray metrics (services/ranking/metrics.py) as Ray's metrics agent exports them:
    `<NAMESPACE>_<name>` (NAMESPACE is "ray"); counters as `..._total` (and, for names without that suffix, the
    deprecated gauge of the bare name too), histograms as `_bucket`/`_sum`/`_count`."""
    from ray._private.telemetry.open_telemetry_metric_recorder import NAMESPACE

    ranking = importlib.import_module("recsys.ranking.metrics")
    made: list[tuple[str, str]] = []

    def fake(kind: str):
        return lambda name, *args, **kwargs: made.append((kind, name))

    fakes = SimpleNamespace(Counter=fake("counter"), Gauge=fake("gauge"), Histogram=fake("histogram"))
    with mock.patch.object(ranking, "metrics", fakes):
        ranking.RankingMetrics()
    names = set()
    for kind, name in made:
        full = f"{NAMESPACE}_{name}"
        if kind == "counter":
            names |= {full} if full.endswith("_total") else {f"{full}_total", full}
        else:
            names |= {full + suffix for suffix in SUFFIXES[kind]}
    return names


@cache
def exported_metrics() -> frozenset[str]:
    """Every sample name the services export (importing each service module that defines a metric)."""
    from prometheus_client import REGISTRY

    define = re.compile(r"^[A-Z_]+\s*=\s*(Counter|Gauge|Histogram|Summary)\(", re.M)
    for path in sorted(SERVICES.rglob("*.py")):
        text = path.read_text()
        if "prometheus_client" in text and define.search(text):
            importlib.import_module(".".join(["recsys", *path.relative_to(SERVICES).with_suffix("").parts]))
    names = {"up"}  # Prometheus' own, per target
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return frozenset(names | _ray_metric_names())


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out += [panel, *panel.get("panels", [])] if panel.get("type") == "row" else [panel]
    return [p for p in out if p.get("type") != "row"]


def test_every_view_is_shipped_and_generated():
    assert [p.stem for p in DASHBOARDS] == ["drift", "experiments", "models", "overview", "streams"]
    sys.path.insert(0, str(HELM_DIR / "tools"))
    dashboards = importlib.import_module("dashboards")
    assert dashboards.main(["--check"]) == 0, "run: python helm/tools/dashboards.py"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path):
    board = load(path)
    assert board["title"] and isinstance(board["schemaVersion"], int) and board["uid"].startswith("recsys-")
    assert len(board["uid"]) <= 40  # Grafana's limit
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    assert variables["namespace"]["datasource"]["uid"] == DATASOURCE
    ids = [p["id"] for p in panels(board)]
    assert panels(board) and len(ids) == len(set(ids))
    for panel in panels(board):
        where = f"{path.name}: {panel.get('title')!r}"
        assert panel["title"] and panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}, where
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == DATASOURCE, where
            assert 'namespace="$namespace"' in target["expr"], f"{where}: every query is scoped to $namespace"


def test_dashboard_uids_and_titles_are_unique():
    boards = [load(p) for p in DASHBOARDS]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_queries_name_exported_metrics(path):
    board = load(path)
    used = set()
    for panel in panels(board):
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            used |= variable_query_names(query)
    assert used, path.name
    assert used - exported_metrics() == set(), f"{path.name} queries metrics no service exports"


def test_alert_expressions_name_exported_metrics(tmp_path):
    helm: Helm = offline_helm(tmp_path)
    out = helm.run(
        "template", "rs", str(helm.chart(UMBRELLA)), "--namespace", "recsys", "--kube-version", K8S_VERSION,
        "--api-versions", "monitoring.coreos.com/v1/PrometheusRule", "--set", "global.serviceMonitor.enabled=true",
        "--show-only", "templates/observability.yaml",
    ).stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(rules) >= 8
    for r in rules:
        assert metric_names(r["expr"]) - exported_metrics() == set(), r["alert"]


def test_the_checks_catch_unknown_metrics():
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="}"}[5m]))) / on(j) group_left(k) b * 1e3'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert variable_query_names("label_values(recsys_grpc_requests_total, namespace)") == {
        "recsys_grpc_requests_total"
    }
    known = exported_metrics()
    assert {"recsys_grpc_requests_total", "recsys_grpc_latency_seconds_bucket", "recsys_gateway_canary_share",
            "ray_recsys_ranking_latency_ms_bucket", "ray_recsys_ranking_requests_total", "up"} <= known
    # A counter without its _total, a histogram without _bucket, a Ray metric without Ray's prefix: unknown.
    assert not {"recsys_grpc_requests", "recsys_grpc_latency_seconds", "recsys_ranking_latency_ms_bucket"} & known
