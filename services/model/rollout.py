"""The canary of a challenger version: its state in the registry, and the rule that ends it.

`<models>/rollout.json` names the challenger being served to a share of users (the gateway adds a `canary` variant
for them, named `canary-<version>`: the control's ranker at the challenger's version; the ranking service loads
both versions). The canary
ends in one of two ways, each an event in the registry's history:

- promote: the challenger becomes `latest` (every service follows `latest`), `canary_promoted`;
- roll back: `latest` stays the champion, `canary_rolled_back`.

`decide` is the rule, on the monitoring service's CTR lift of the canary variant against control and its 95%
interval: promote once enough impressions were served and the interval's lower bound clears `-tolerance`; roll back
at once when its upper bound is below zero; otherwise wait (and roll back when the canary runs past its time limit
without a verdict, so a challenger nobody can judge never lingers).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from recsys.model.registry import Registry, RegistryError

ROLLOUT = "rollout.json"
CANARY_VARIANT = "canary"
PROMOTE, ROLL_BACK, WAIT = "promote", "rollback", "wait"


@dataclass(frozen=True)
class Rollout:
    """A canary in progress: `challenger` served to `share` of users, against `champion` (`latest` at start)."""

    champion: str
    challenger: str
    share: float
    started_at: float  # epoch seconds
    reason: str = ""

    @property
    def variant(self) -> str:
        """The experiment variant the canary's users are in (its own name per challenger, so the monitoring
        service's figures of one canary never mix with another's)."""
        return f"{CANARY_VARIANT}-{self.challenger}"


@dataclass(frozen=True)
class CanaryPolicy:
    """When a canary ends: impressions it needs, the CTR-lift tolerance, and how long it may run undecided."""

    min_impressions: int = 2000
    tolerance: float = 0.02
    max_age_s: float = 86_400.0


@dataclass(frozen=True)
class Verdict:
    action: str  # promote | rollback | wait
    reason: str


def current(registry: Registry) -> Rollout | None:
    """The canary in progress, or None."""
    path = registry.root / ROLLOUT
    try:
        return Rollout(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def start(registry: Registry, challenger: str, share: float, reason: str = "") -> Rollout:
    """Serve `challenger` to `share` of users next to the champion (`latest`); recorded as `canary_started`."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"canary share must be between 0 and 1 (exclusive), got {share}")
    if current(registry) is not None:
        raise RegistryError(f"a canary is already running in {registry.root} ({current(registry).challenger})")
    registry.path(challenger)  # raises for an unknown version
    champion = registry.latest()
    if champion is None:
        raise RegistryError(f"no champion (`latest`) in {registry.root} to run a canary against")
    rollout = Rollout(champion=champion, challenger=challenger, share=share, started_at=time.time(), reason=reason)
    tmp = registry.root / f".{ROLLOUT}.{os.getpid()}"
    tmp.write_text(json.dumps(asdict(rollout), indent=2))
    os.replace(tmp, registry.root / ROLLOUT)
    registry.record("canary_started", version=challenger, champion=champion, share=share, reason=reason)
    return rollout


def decide(rollout: Rollout, impressions: int, lift_low: float, lift_high: float, policy: CanaryPolicy,
           now: float | None = None) -> Verdict:
    """Promote, roll back or wait, from the canary's impressions and its CTR-lift interval against control."""
    age = (now if now is not None else time.time()) - rollout.started_at
    if impressions > 0 and lift_high < 0.0:
        return Verdict(ROLL_BACK, f"CTR lift interval [{lift_low:+.3f}, {lift_high:+.3f}] is below zero")
    if impressions >= policy.min_impressions and lift_low >= -policy.tolerance:
        return Verdict(PROMOTE, f"CTR lift interval [{lift_low:+.3f}, {lift_high:+.3f}] clears -{policy.tolerance} "
                                f"after {impressions} impressions")
    if age > policy.max_age_s:
        return Verdict(ROLL_BACK, f"no verdict after {age:.0f} s ({impressions} impressions)")
    return Verdict(WAIT, f"{impressions} of {policy.min_impressions} impressions, lift interval "
                         f"[{lift_low:+.3f}, {lift_high:+.3f}]")


def finish(registry: Registry, verdict: Verdict, figures: dict | None = None) -> str | None:
    """End the canary by `verdict` (promote or roll back); returns the version now `latest`."""
    rollout = current(registry)
    if rollout is None:
        raise RegistryError(f"no canary in progress in {registry.root}")
    if verdict.action == PROMOTE:
        registry.set_latest(rollout.challenger, reason="promote")
        registry.record("canary_promoted", version=rollout.challenger, champion=rollout.champion,
                        reason=verdict.reason, figures=figures or {})
    elif verdict.action == ROLL_BACK:
        registry.record("canary_rolled_back", version=rollout.challenger, champion=rollout.champion,
                        reason=verdict.reason, figures=figures or {})
    else:
        raise ValueError(f"a canary ends by promote or rollback, not {verdict.action!r}")
    Path(registry.root / ROLLOUT).unlink(missing_ok=True)
    return registry.latest()
