"""The champion / challenger gate: is a challenger's offline quality within tolerance of the champion's?

Gated metrics, all measured on the same held-out window (`recsys.training.window_eval`): two-stage Recall@K and
NDCG@K and the default ranker's AUC (higher is better), and its logloss (lower is better). Each has a relative
tolerance: the challenger fails when any of them is worse than the champion's by more than that share of the
champion's figure (an absolute difference when the champion's figure is 0). Without a champion it passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

DEFAULT_TOLERANCE = 0.02
# Gated metric families and whether higher is better; recall and ndcg are measured at the policy's K.
HIGHER_IS_BETTER = {"recall": True, "ndcg": True, "auc": True, "logloss": False}
AT_K = ("recall", "ndcg")
NO_CHAMPION = "no champion"


@dataclass(frozen=True)
class GatePolicy:
    """Relative tolerance per metric family (`HIGHER_IS_BETTER` keys) and the K of Recall@K / NDCG@K."""

    k: int = 20
    tolerances: Mapping[str, float] = field(
        default_factory=lambda: dict.fromkeys(HIGHER_IS_BETTER, DEFAULT_TOLERANCE)
    )

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"K must be at least 1, got {self.k}")
        unknown = sorted(set(self.tolerances) - set(HIGHER_IS_BETTER))
        if unknown:
            raise ValueError(f"unknown gated metric(s) {', '.join(unknown)}; expected {', '.join(HIGHER_IS_BETTER)}")
        for family, tolerance in self.tolerances.items():
            if not (math.isfinite(tolerance) and tolerance >= 0):
                raise ValueError(f"tolerance of {family} must be a number >= 0, got {tolerance}")

    def with_tolerances(self, **tolerances: float) -> GatePolicy:
        """This policy with some families' tolerances replaced."""
        return replace(self, tolerances={**self.tolerances, **tolerances})

    def metric(self, family: str) -> str:
        """The metric's key in a metrics dict: 'recall@20', 'auc', ..."""
        return f"{family}@{self.k}" if family in AT_K else family

    def gated(self) -> list[tuple[str, float, bool]]:
        """(metric key, tolerance, higher is better) of every gated metric."""
        return [(self.metric(f), float(t), HIGHER_IS_BETTER[f]) for f, t in self.tolerances.items()]


@dataclass(frozen=True)
class GateDecision:
    """`passed`, a reason naming the deciding metrics and figures, and per-metric comparisons."""

    passed: bool
    reason: str
    deltas: dict

    @property
    def decision(self) -> str:
        return "passed" if self.passed else "refused"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _compare(champion: float, challenger: float, tolerance: float, higher: bool) -> dict:
    """How much worse the challenger is (relative to the champion's figure; > 0 is worse) and whether too much."""
    better_by = challenger - champion if higher else champion - challenger
    scale = abs(champion) or 1.0
    worse_by = -better_by / scale
    return {"champion": champion, "challenger": challenger, "delta": challenger - champion,
            "relative": (challenger - champion) / scale, "tolerance": tolerance, "higher_is_better": higher,
            "worse": bool(worse_by > tolerance + 1e-12)}


def _describe(name: str, d: dict) -> str:
    return (f"{name} {d['challenger']:.4f} vs champion {d['champion']:.4f} ({d['relative']:+.1%}, "
            f"tolerance {d['tolerance']:.1%}, {'higher' if d['higher_is_better'] else 'lower'} is better)")


def judge(champion: Mapping[str, float] | None, challenger: Mapping[str, float], policy: GatePolicy) -> GateDecision:
    """Pass or refuse `challenger` against `champion` (None or empty: no champion, it passes)."""
    if not champion:
        return GateDecision(True, NO_CHAMPION, {})
    deltas: dict[str, dict] = {}
    failures: list[str] = []
    for name, tolerance, higher in policy.gated():
        ours, theirs = challenger.get(name), champion.get(name)
        if not _finite(theirs):
            deltas[name] = {"champion": theirs, "challenger": ours, "skipped": "champion has no figure"}
            continue
        if not _finite(ours):
            deltas[name] = {"champion": theirs, "challenger": ours, "worse": True}
            failures.append(f"{name} not measured for the challenger (champion {theirs:.4f})")
            continue
        deltas[name] = _compare(float(theirs), float(ours), tolerance, higher)
        if deltas[name]["worse"]:
            failures.append(_describe(name, deltas[name]))
    if failures:
        return GateDecision(False, "worse than the champion beyond tolerance: " + "; ".join(failures), deltas)
    compared = [_describe(n, d) for n, d in deltas.items() if "skipped" not in d]
    if not compared:
        return GateDecision(True, "no gated metric of the champion to compare with", deltas)
    return GateDecision(True, "within tolerance of the champion: " + "; ".join(compared), deltas)
