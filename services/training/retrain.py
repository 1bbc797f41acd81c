"""`recsys retrain`: train a challenger, measure it against the champion, and let the gate decide.

1. The dataset's most recent interactions are held out (`recsys.training.window`; never any the champion was
   trained on, when its manifest says: `data_window.train.until`). The challenger is trained on everything
   before them and written to the registry unpublished, its manifest naming its parent (the champion, `latest`),
   its data window and fingerprint, config and timings.
2. Champion and challenger, both loaded from the registry, are measured the same way on the window
   (`recsys.training.window_eval`) and the gate judges (`recsys.training.gate`).
3. The decision goes into the registry's history (`gate`) and the version's manifest (`gate`). A challenger that
   passed is served to a share of users first (`recsys.model.rollout`) when a canary share is set, else promoted
   to `latest` at once (as is the first version of an empty registry); a refused one stays unpublished.
4. The report (gate.json + gate.html) goes to `<registry>/reports/<version>/` unless told otherwise.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.model import rollout
from recsys.model.bundle import load_bundle, save_bundle
from recsys.model.registry import Registry, RegistryError
from recsys.training.data.schema import Dataset
from recsys.training.gate import GateDecision, GatePolicy, judge
from recsys.training.gate_report import write_gate_report
from recsys.training.pipeline import DatasetError, TrainConfig, train_all, validate_dataset
from recsys.training.provenance import code_version, data_fingerprint
from recsys.training.window import HeldOutWindow, recent_window
from recsys.training.window_eval import measure, window_truth

REPORTS = "reports"
CANARY, PROMOTED, UNPUBLISHED = "canary", "promoted", "unpublished"


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did: the challenger `version`, its `parent`, the gate's decision, the action taken."""

    version: str
    parent: str | None
    decision: GateDecision
    metrics: dict
    action: str  # canary | promoted | unpublished
    latest: str | None
    canary: dict | None
    report: Path

    def summary(self) -> dict:
        """The JSON line `recsys retrain` prints (the headline figures of each side; the report has them all)."""
        headline = {side: {k: v for k, v in m.items() if not isinstance(v, dict)} if m else None
                    for side, m in self.metrics.items()}
        return {"version": self.version, "parent": self.parent, "decision": self.decision.decision,
                "reason": self.decision.reason, "action": self.action, "latest": self.latest,
                "canary": self.canary, "metrics": headline, "report": str(self.report)}


def _shuffled_items(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.assign(item_id=frame["item_id"].iloc[rng.permutation(len(frame))].reset_index(drop=True).array)


def shuffle_labels(ds: Dataset, seed: int) -> Dataset:
    """A test aid, never for real models: each interaction's (and logged exposure's) item replaced by another
    row's item (a random permutation of the item column), so users, items, popularity and timestamps stay but
    who-likes-what is noise. `recsys retrain --shuffle-labels` trains such a deliberately worse challenger to
    show the gate refuse it."""
    rng = np.random.default_rng(seed)
    exposures = None if ds.exposures is None else _shuffled_items(ds.exposures, rng)
    return replace(ds, interactions=_shuffled_items(ds.interactions, rng), exposures=exposures,
                   name=f"{ds.name} (shuffled labels)", meta={**ds.meta, "shuffled_labels": True})


def _manifest(ds: Dataset, held: HeldOutWindow, source: dict, parent: str | None, cfg: TrainConfig,
              timings: dict, shuffled: bool) -> dict:
    return {
        "dataset": {"name": ds.name, **source, "fingerprint": data_fingerprint(ds),
                    "train_fingerprint": data_fingerprint(held.history), "n_users": ds.n_users,
                    "n_items": ds.n_items, "n_interactions": len(ds.interactions), "shuffled_labels": shuffled},
        "parent": parent,
        "data_window": held.describe(),
        "code_version": code_version(),
        "config": cfg.to_dict(),
        "timings": timings,
        "metrics": {},
    }


def _champion_data_until(registry: Registry, champion: str | None) -> int | None:
    """The last timestamp the champion was trained on (None: no champion, or a version that does not say)."""
    if champion is None:
        return None
    until = registry.manifest(champion).get("data_window", {}).get("train", {}).get("until")
    return int(until) if until is not None else None


def _check_idle(registry: Registry) -> None:
    running = rollout.current(registry)
    if running is not None:
        raise RegistryError(f"a canary of {running.challenger} is running in {registry.root}: finish it before "
                            "retraining (a new challenger would move `latest` under it)")


def _act(registry: Registry, version: str, parent: str | None, decision: GateDecision,
         canary_share: float) -> tuple[str, dict | None]:
    """Start the canary or promote a challenger that passed; nothing for a refused one."""
    if not decision.passed:
        return UNPUBLISHED, None
    if canary_share > 0 and parent is not None:
        started = rollout.start(registry, version, canary_share, reason=f"gate passed: {decision.reason}")
        return CANARY, asdict(started)
    registry.set_latest(version, reason="promote")
    registry.record("promoted", version=version, parent=parent,
                    reason="no champion" if parent is None else f"gate passed: {decision.reason}")
    return PROMOTED, None


def _train_challenger(registry: Registry, ds: Dataset, held: HeldOutWindow, parent: str | None,
                      cfg: TrainConfig, shuffle: bool, source: dict, progress: bool) -> tuple[str, dict]:
    """Train on the history and write the version unpublished; returns it and its manifest."""
    train_ds = shuffle_labels(held.history, cfg.seed) if shuffle else held.history
    t0 = time.perf_counter()
    bundle, timings = train_all(train_ds, cfg, progress)
    timings = {**timings, "train_s": round(time.perf_counter() - t0, 2)}
    manifest = _manifest(ds, held, source, parent, cfg, timings, shuffle)
    return registry.create(lambda folder: save_bundle(bundle, folder), manifest, publish=False), manifest


def _measure(registry: Registry, version: str, parent: str | None, held: HeldOutWindow, k: int,
             cfg: TrainConfig) -> dict:
    """Champion (when there is one) and challenger, both as the registry holds them, on the window."""
    bundles = {"challenger": load_bundle(registry.path(version))}
    if parent is not None:
        bundles = {"champion": load_bundle(registry.path(parent)), **bundles}
    return measure(bundles, held, k, cfg)


def _off_policy(registry: Registry, version: str, parent: str | None, held: HeldOutWindow, log_uri: str) -> dict:
    """Off-policy estimates of both versions' CTR on the window's logged lists (reported, not gated): what each
    would have earned re-ranking the pools the gateway logged (`recsys.training.ope`)."""
    from recsys.training.ope.evaluate import evaluate_versions
    from recsys.training.ope.logged import read_logged

    t0 = time.perf_counter()
    try:
        logged = read_logged(log_uri, held.since * 1000, (held.until + 1) * 1000)
        bundles = {"challenger": load_bundle(registry.path(version))}
        if parent is not None:
            bundles = {"champion": load_bundle(registry.path(parent)), **bundles}
        result = evaluate_versions(bundles, held.history, logged)
    except Exception as exc:  # noqa: BLE001 - an estimate that cannot be made must not fail the retrain
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {**result, "seconds": round(time.perf_counter() - t0, 2)}


def retrain(
    ds: Dataset,
    registry_root: str | Path,
    cfg: TrainConfig,
    policy: GatePolicy,
    window_frac: float | None = 0.1,
    window_hours: float | None = None,
    canary_share: float = 0.0,
    shuffle: bool = False,
    report_dir: str | Path | None = None,
    source: dict | None = None,
    progress: bool = False,
    ope_log: str | None = None,
) -> RetrainResult:
    """Train a challenger on `ds` minus its recent window, gate it against `latest`, record and act (see above)."""
    if not 0.0 <= canary_share < 1.0:
        raise DatasetError(f"canary share must be in [0, 1), got {canary_share}")
    validate_dataset(ds)
    registry = Registry(registry_root)
    _check_idle(registry)
    parent = registry.latest()
    held = recent_window(ds, window_frac, window_hours, after=_champion_data_until(registry, parent))
    window_truth(held, {})  # fails now, not after training, when no user of the window can be measured
    version, manifest = _train_challenger(registry, ds, held, parent, cfg, shuffle, source or {}, progress)

    t0 = time.perf_counter()
    measured = _measure(registry, version, parent, held, policy.k, cfg)
    decision = judge(measured.get("champion"), measured["challenger"], policy)
    metrics = {side: measured.get(side) for side in ("champion", "challenger")}
    ope = _off_policy(registry, version, parent, held, ope_log) if ope_log else None
    out = Path(report_dir) if report_dir else registry.root / REPORTS / version
    gate = {"decision": decision.decision, "reason": decision.reason, "parent": parent, "deltas": decision.deltas,
            "policy": {"k": policy.k, "tolerances": dict(policy.tolerances)}, "measured": measured["window"],
            "report": str(out), "evaluate_s": round(time.perf_counter() - t0, 2)}
    registry.record("gate", version=version, parent=parent, window=held.describe(), measured=measured["window"],
                    metrics=metrics, decision=decision.decision, reason=decision.reason, report=str(out))
    registry.update_manifest(version, gate=gate, metrics=measured["challenger"])
    action, canary = _act(registry, version, parent, decision, canary_share)

    record = {"version": version, "champion": parent, "challenger": version, "action": action, "canary": canary,
              "latest": registry.latest(), "decision": {"passed": decision.passed, **gate},
              "policy": gate["policy"], "window": held.describe(), "measured": measured["window"],
              "metrics": metrics, "shuffled_labels": shuffle, "dataset": manifest["dataset"], "ope": ope}
    json_path, _ = write_gate_report(record, out)
    return RetrainResult(version, parent, decision, metrics, action, registry.latest(), canary, json_path)
