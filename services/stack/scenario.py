"""`recsys demo --scenario drift`: the learning loop closing by itself after the users' tastes shift.

Everything real: a private Kafka, every service as its own process, the event log writer, and the lifecycle
loop `recsys serve` runs. Traffic clicks by the synthetic ground truth. Midway the ground truth changes (`shift`):
some genres go out of fashion, others come in, so the champion keeps serving what users now click less. What
follows is nobody's step: monitoring sees the CTR fall against each variant's own baseline (and drift in its
windows), asks for a retrain (`RECSYS_MONITORING_RETRAIN_TRIGGER=file`), the lifecycle loop runs `recsys retrain`
on the base data plus the event log, the gate judges the challenger (with the off-policy estimate beside it),
the canary compares it online, and a promotion moves `latest`; CTR recovers.

The timeline (CTR per variant per interval as users really clicked, the monitoring's drift windows, the
events) is printed, saved as timeline.json and drawn as scenario.png / scenario.html; the last line is one JSON.
"""

from __future__ import annotations

import calendar
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
from tqdm import tqdm

from recsys.common.clients import channel, credential_metadata
from recsys.model.registry import Registry
from recsys.stack.broker import local_broker
from recsys.stack.demo import DemoOptions, prepare
from recsys.stack.local import StackConfig, start_stack
from recsys.stack.scenario_plot import CtrPoint, DriftPoint, Marker, Timeline, write_timeline_plot
from recsys.stack.simulator import simulate
from recsys.training.data.loaders import load_dataset
from recsys.training.data.synthetic import GroundTruth
from recsys.v1 import monitoring_pb2, monitoring_pb2_grpc

# What counts as "detected": the signals that start a retrain here (a window's drift verdicts are shown too).
DETECTING = ("ctr_drop",)
REGISTRY_EVENTS = {"retrain_started": "retrain started", "canary_started": "canary started",
                   "canary_promoted": "promoted", "canary_rolled_back": "rolled back"}


@dataclass
class ScenarioOptions:
    var_dir: Path
    users: int = 3000
    items: int = 1000
    interactions: int = 60_000
    seed: int = 42
    concurrency: int = 4
    before_s: float = 150.0  # traffic before the shift
    max_after_s: float = 720.0  # longest wait after the shift for a promotion
    after_promotion_s: float = 60.0  # traffic after the promotion
    interval_s: float = 10.0  # one timeline point per variant per interval
    strength: float = 2.0  # logit added to in-fashion items and taken from out-of-fashion ones


# Lighter training than the defaults (fewer sampled negatives, epochs and rounds), for the first training and
# the retrain alike: the retrain runs on the 2 cores the traffic also uses, and the scenario should fit 15 minutes.
TRAIN_CONFIG = {"n_hard": 50, "n_random": 10, "als": {"iterations": 6}, "dcn": {"epochs": 3},
                "lgbm": {"n_estimators": 150}}


def scenario_env(opts: ScenarioOptions) -> dict[str, str]:
    """Monitoring, canary and event log settings scaled from hours to the scenario's minutes."""
    return {
        "RECSYS_TRAIN_CONFIG": str(opts.var_dir / "train-config.json"),
        "RECSYS_MONITORING_BUCKET_S": "5", "RECSYS_MONITORING_CTR_MATURITY_S": "5",
        "RECSYS_MONITORING_CTR_DROP_RECENT_S": "30", "RECSYS_MONITORING_CTR_DROP_BASELINE_S": "60",
        "RECSYS_MONITORING_CTR_DROP_MIN_IMPRESSIONS": "4000", "RECSYS_MONITORING_ACTIONS_CHECK_S": "5",
        "RECSYS_MONITORING_CTR_DROP_MIN_RELATIVE": "0.2", "RECSYS_MONITORING_CTR_DROP_P": "0.0001",
        "RECSYS_MONITORING_RETRAIN_ON": "ctr_drop",
        "RECSYS_MONITORING_RETRAIN_TRIGGER": "file", "RECSYS_MONITORING_RETRAIN_MIN_INTERVAL_S": "900",
        "RECSYS_MONITORING_DRIFT_WINDOW_S": "20", "RECSYS_MONITORING_DRIFT_MIN_ROWS": "100",
        "RECSYS_MONITORING_SAVE_HTML": "0", "RECSYS_GATEWAY_PREDICTION_SAMPLE": "0.3",
        "RECSYS_EVENTLOG_FLUSH_S": "2", "RECSYS_GATEWAY_ROLLOUT_REFRESH_S": "1",
        "RECSYS_CANARY_MIN_IMPRESSIONS": "2500", "RECSYS_CANARY_CHECK_S": "5", "RECSYS_CANARY_SHARE": "0.3",
        # learn from the new tastes since the drop; judge on the last 36 s
        "RECSYS_RETRAIN_DELAY_S": "45", "RECSYS_RETRAIN_WINDOW_HOURS": "0.01",
    }


def shift(truth: GroundTruth, items: pd.DataFrame, interactions: pd.DataFrame,
          strength: float) -> tuple[GroundTruth, dict]:
    """The ground truth after the users' tastes shift: the two genres users chose most go out of fashion (their
    items' click logit - strength), two of the middle ones come in (+ strength)."""
    genres = items.set_index(items["item_id"].astype(str))["genres"].map(list)
    chosen = genres.reindex(interactions["item_id"].astype(str)).dropna().explode().dropna().value_counts()
    out_of, into = list(chosen.index[:2]), list(chosen.index[len(chosen) // 2: len(chosen) // 2 + 2])
    of_item = genres.reindex(truth.item_ids)
    down = of_item.map(lambda g: isinstance(g, list) and bool(set(g) & set(out_of))).to_numpy(bool)
    up = of_item.map(lambda g: isinstance(g, list) and bool(set(g) & set(into))).to_numpy(bool)
    quality = truth.item_quality.astype(np.float32).copy()
    quality[down & ~up] -= strength
    quality[up] += strength
    shifted = replace(truth, item_quality=quality)
    return shifted, {"out_of_fashion": out_of, "in_fashion": into, "items_down": int((down & ~up).sum()),
                     "items_up": int(up.sum()), "strength": strength}


class Observer:
    """What the scenario reads from the system while it runs: monitoring's alerts and drift windows, and the
    registry's history (retrains, canaries, promotions)."""

    def __init__(self, monitoring: str, registry: Registry, t0: float) -> None:
        self.channel = channel(monitoring)
        self.stub = monitoring_pb2_grpc.MonitoringServiceStub(self.channel)
        self.registry = registry
        self.t0 = t0
        self.alerts: dict[str, tuple[float, str, str]] = {}  # alert id -> (t_s, kind, message)
        self.drift: dict[str, DriftPoint] = {}
        self.events: list[tuple[float, str, dict]] = []

    def poll(self) -> None:
        md = credential_metadata()
        try:
            for a in self.stub.ListAlerts(monitoring_pb2.ListAlertsRequest(limit=200), timeout=5, metadata=md).alerts:
                self.alerts.setdefault(a.alert_id, (a.created_ms / 1000 - self.t0, a.kind, a.message))
            report = self.stub.GetDriftReport(monitoring_pb2.GetDriftReportRequest(), timeout=5, metadata=md)
            if report.report_id and report.report_id not in self.drift:
                self.drift[report.report_id] = DriftPoint(report.window_end_ms / 1000 - self.t0,
                                                          report.drifted_share, report.dataset_drift)
        except grpc.RpcError:  # a slow answer under load: the next poll catches up
            pass
        self.events = [(calendar.timegm(time.strptime(e["at"], "%Y-%m-%dT%H:%M:%SZ")) - self.t0, e["kind"], e)
                       for e in self.registry.history() if e.get("kind") in REGISTRY_EVENTS]

    def first(self, kinds: tuple[str, ...], after_s: float, alerts: bool = True, events: bool = True) -> float | None:
        """When the first alert or registry event of `kinds` at or after `after_s` happened (None: not yet)."""
        times = [t for t, kind, _ in self.alerts.values() if alerts and kind in kinds and t >= after_s]
        times += [t for t, kind, _ in self.events if events and kind in kinds and t >= after_s]
        return min(times) if times else None

    def close(self) -> None:
        self.channel.close()


def _ctr(points: list[CtrPoint], since: float, until: float) -> float | None:
    chosen = [p for p in points if since <= p.t_s < until]
    shown = sum(p.impressions for p in chosen)
    return sum(p.ctr * p.impressions for p in chosen) / shown if shown else None


def run_scenario(opts: ScenarioOptions) -> dict:
    """The whole scenario (see the module docstring); returns the summary whose JSON it prints last. Its folder
    is its own: a previous run's state (registry, monitoring, log) is removed first."""
    began = time.perf_counter()
    if opts.var_dir.exists():
        shutil.rmtree(opts.var_dir)
    out_dir = opts.var_dir / "scenario"
    out_dir.mkdir(parents=True, exist_ok=True)
    (opts.var_dir / "train-config.json").write_text(json.dumps(TRAIN_CONFIG))
    with local_broker(opts.var_dir / "kafka") as broker:
        env = scenario_env(opts)
        cfg = replace(StackConfig.default(opts.var_dir, broker.bootstrap, fixed_ports=False, ranking_instances=1),
                      extra_env=env)
        demo = DemoOptions(var_dir=opts.var_dir, kafka_bootstrap=broker.bootstrap, users=opts.users,
                           items=opts.items, interactions=opts.interactions, seed=opts.seed, data_end="now")
        started = time.perf_counter()
        data_dir, cfg = prepare(demo, cfg)
        prepare_s = time.perf_counter() - started
        dataset = load_dataset(data_dir)
        truth: GroundTruth = dataset.meta["truth"]
        shifted, how = shift(truth, dataset.items, dataset.interactions, opts.strength)
        users = list(dataset.interactions["user_id"].astype(str).unique())
        print("\n==> start every service, the event log writer and the lifecycle loop", flush=True)
        supervisor = start_stack(cfg)
        loop = _start_loop(cfg, data_dir)
        try:
            result = _traffic(opts, cfg, truth, shifted, users, out_dir)
        finally:
            loop.stop()
            supervisor.stop()
    result.update({"shift": how, "prepare_s": round(prepare_s, 1), "total_s": round(time.perf_counter() - began, 1)})
    return result


def _start_loop(cfg: StackConfig, data_dir: Path):
    from recsys.eventlog.settings import EventLogSettings
    from recsys.lifecycle.loop import LifecycleLoop, run_cli
    from recsys.lifecycle.settings import LifecycleSettings

    env = {**cfg.env(), "RECSYS_RETRAIN_BASE": str(data_dir)}
    os.environ.update(env)  # the loop's settings read the stack's folders, addresses and the scenario's pace
    return LifecycleLoop(LifecycleSettings.from_env(), run_cli(env, cfg.var_dir / "logs" / "lifecycle.log"),
                         log_uri=EventLogSettings.from_env().uri).start()


def _traffic(opts: ScenarioOptions, cfg: StackConfig, truth: GroundTruth, shifted: GroundTruth, users: list[str],
             out_dir: Path) -> dict:
    """Traffic in intervals: before the shift, after it until a promotion (or the limit), then after it."""
    t0 = time.time()
    print(f"    traffic starts at {time.strftime('%H:%M:%S')} (epoch {t0:.0f})", flush=True)
    registry = Registry(cfg.models_dir)
    observer = Observer(cfg.address("monitoring"), registry, t0)
    points: list[CtrPoint] = []
    shift_at = promoted_at = None
    total = opts.before_s + opts.max_after_s + opts.after_promotion_s
    bar = tqdm(total=round(total), desc="scenario", unit="s", bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
               "[{elapsed}<{remaining}] {postfix}")
    step = 0
    try:
        while True:
            now = time.time() - t0
            if shift_at is None and now >= opts.before_s:
                shift_at = now
                print(f"\n    t={now:.0f} s: the users' tastes shift", flush=True)
            current = truth if shift_at is None else shifted
            stats = simulate(cfg.address("gateway"), current, users, seconds=opts.interval_s,
                             concurrency=opts.concurrency, seed=opts.seed + step)
            step += 1
            mid = now + opts.interval_s / 2
            for variant, n in stats.impressions.items():
                if n:
                    p = stats.clicks[variant] / n
                    half = 1.96 * (max(p * (1 - p), 1e-6) / n) ** 0.5
                    points.append(CtrPoint(mid, variant, p, n, max(0.0, p - half), p + half))
            observer.poll()
            if shift_at is not None and promoted_at is None:
                promoted_at = observer.first(("canary_promoted",), shift_at)
            elapsed = time.time() - t0
            bar.n = min(bar.total, round(elapsed))
            bar.set_postfix_str(_state(observer, shift_at))
            bar.refresh()
            if promoted_at is not None and elapsed >= promoted_at + opts.after_promotion_s:
                break
            if shift_at is not None and promoted_at is None and elapsed >= shift_at + opts.max_after_s:
                break
    finally:
        bar.close()
        observer.close()
    return _summary(opts, observer, points, shift_at or 0.0, promoted_at, registry, out_dir)


def _state(observer: Observer, shift_at: float | None) -> str:
    if shift_at is None:
        return "before the shift"
    kinds = [kind for t, kind, _ in sorted(observer.events, key=lambda e: e[0]) if t >= shift_at]
    detected = observer.first(DETECTING, shift_at)
    return kinds[-1] if kinds else ("drift detected" if detected is not None else "after the shift")


def _summary(opts: ScenarioOptions, observer: Observer, points: list[CtrPoint], shift_at: float,
             promoted_at: float | None, registry: Registry, out_dir: Path) -> dict:
    end = max((p.t_s for p in points), default=0.0) + opts.interval_s
    detected = observer.first(DETECTING, shift_at)
    requested = observer.first(("retrain_started",), shift_at, events=False)  # monitoring's alert: asked for
    retrain = observer.first(("retrain_started",), shift_at, alerts=False)  # the lifecycle loop: started
    canary = observer.first(("canary_started",), shift_at)
    rolled_back = observer.first(("canary_rolled_back",), shift_at)
    ctr_before = _ctr(points, opts.before_s / 4, shift_at)  # after the first clicks warmed the counters
    ctr_after_shift = _ctr(points, shift_at, promoted_at if promoted_at is not None else end)
    ctr_after = _ctr(points, promoted_at, end) if promoted_at is not None else None
    lows = defaultdict(list)
    for p in points:
        if shift_at <= p.t_s < (promoted_at or end):
            lows[p.t_s].append(p)
    interval_ctr = [_ctr(group, -1e9, 1e9) for group in lows.values()]
    markers = [Marker(shift_at, "tastes shift")]
    for label, t in (("drift detected", detected), ("retrain requested", requested), ("retrain started", retrain),
                     ("canary started", canary),
                     ("promoted", promoted_at), ("rolled back", rolled_back)):
        if t is not None:
            markers.append(Marker(t, label))
    timeline = Timeline(points, sorted(observer.drift.values(), key=lambda d: d.t_s), markers)
    (out_dir / "timeline.json").write_text(json.dumps(timeline.to_dict()))
    png, html = write_timeline_plot(timeline, out_dir)
    ope = _ope_estimate(registry)
    alerts = sorted(((round(t, 1), kind, message) for t, kind, message in observer.alerts.values() if t >= 0))

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - shift_at, 1)

    return {
        "ctr_before_shift": _round(ctr_before), "ctr_after_shift": _round(ctr_after_shift),
        "ctr_after_shift_low": _round(min((c for c in interval_ctr if c is not None), default=None)),
        "ctr_after_promotion": _round(ctr_after),
        "drift_detected_after_s": rel(detected), "retrain_requested_after_s": rel(requested),
        "retrain_started_after_s": rel(retrain),
        "canary_started_after_s": rel(canary), "promoted_after_s": rel(promoted_at),
        "rolled_back_after_s": rel(rolled_back), "ope_ctr_estimate": ope.get("estimate"), "ope": ope,
        "shift_at_s": round(shift_at, 1), "duration_s": round(end, 1), "alerts": alerts[:40],
        "plot": {"png": str(png), "html": str(html), "timeline": str(out_dir / "timeline.json")},
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _ope_estimate(registry: Registry) -> dict:
    """The off-policy estimate of the newest gated challenger's CTR (DR, else SNIPS), from its gate report."""
    gates = registry.history("gate")
    if not gates:
        return {}
    report = Path(str(gates[-1].get("report", ""))) / "gate.json"
    try:
        ope = json.loads(report.read_text()).get("ope") or {}
    except (OSError, ValueError):
        return {}
    challenger = ope.get("versions", {}).get("challenger", {})
    best = challenger.get("dr") or challenger.get("snips") or {}
    return {"version": gates[-1].get("version"), "estimate": _round(best.get("ctr")),
            "interval": [_round(best.get("low")), _round(best.get("high"))], "lists": ope.get("lists"),
            "logged": ope.get("logged"), "champion": ope.get("versions", {}).get("champion"),
            "error": ope.get("error")}


def print_summary(summary: dict) -> None:
    """The timeline in words, then the JSON line."""
    print("\n==> drift scenario")
    print(f"    tastes shift at t={summary['shift_at_s']} s: {summary['shift']}")
    for label, key in (("drift detected", "drift_detected_after_s"), ("retrain requested", "retrain_requested_after_s"),
                       ("retrain started", "retrain_started_after_s"),
                       ("canary started", "canary_started_after_s"), ("promoted", "promoted_after_s"),
                       ("rolled back", "rolled_back_after_s")):
        value = summary[key]
        print(f"    {label:<16} {'-' if value is None else f'+{value:.0f} s after the shift'}")
    print(f"    CTR before the shift {summary['ctr_before_shift']}, after it {summary['ctr_after_shift']} "
          f"(lowest interval {summary['ctr_after_shift_low']}), after the promotion {summary['ctr_after_promotion']}")
    print(f"    off-policy estimate of the challenger's CTR: {summary['ope_ctr_estimate']}")
    print(f"    plot {summary['plot']['png']} and {summary['plot']['html']}; {summary['total_s']:.0f} s in all")
    print(json.dumps(summary, default=str))
