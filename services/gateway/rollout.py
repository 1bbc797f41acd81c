"""The canary overlay on the experiment: while the registry names a challenger (`recsys.model.rollout`), a
share of users gets the `canary-<version>` variant (the control's ranker at the challenger's version) and the
rest the experiment as configured; when the canary ends, every user is back on the experiment within one refresh.

The registry's `rollout.json` is re-read at most every `refresh_s` (its mtime first, so a refresh costs one
stat), in the request's thread: no background thread, and a missing or unreadable file means no canary.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from prometheus_client import Gauge

from recsys.gateway.experiments import Experiment, Variant
from recsys.model import rollout
from recsys.model.registry import HISTORY, Registry

log = logging.getLogger("recsys.gateway.rollout")

CANARY_SHARE = Gauge("recsys_gateway_canary_share", "Share of users served the canary (0 = no canary)")
CANARY_INFO = Gauge("recsys_gateway_canary", "The canary in progress (1), by challenger and champion version",
                    ["challenger", "champion"])
LIFECYCLE = Gauge("recsys_model_lifecycle_events", "Events in the model registry's history so far, by kind (gate, "
                  "canary_started, canary_promoted, canary_rolled_back, latest, retrain_started, ...)", ["kind"])


class RolloutFollower:
    """The registry's current canary, re-read at most every `refresh_s`."""

    def __init__(self, models_dir: str, refresh_s: float = 2.0, clock=time.monotonic) -> None:
        self.registry = Registry(models_dir)
        self.refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0
        self._mtime: float | None = None
        self._history_mtime: float | None = None
        self._current: rollout.Rollout | None = None

    def current(self) -> rollout.Rollout | None:
        now = self._clock()
        if now < self._next:
            return self._current
        with self._lock:
            if now >= self._next:
                self._next = now + self.refresh_s
                self._refresh()
        return self._current

    def _refresh(self) -> None:
        self._refresh_history()
        path = Path(self.registry.root) / rollout.ROLLOUT
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        previous = self._current
        try:
            self._current = rollout.current(self.registry) if mtime is not None else None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable rollout state; serving without a canary", extra={"error": str(exc)})
            self._current = None
        if previous != self._current:
            _export(previous, self._current)
            log.info("canary changed", extra={"canary": self._current.challenger if self._current else None})


    def _refresh_history(self) -> None:
        """The registry's history as per-kind counts (every gate decision, canary step and move of `latest`)."""
        try:
            mtime = (Path(self.registry.root) / HISTORY).stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._history_mtime:
            return
        self._history_mtime = mtime
        try:
            kinds = Counter(str(e.get("kind", "latest")) for e in self.registry.history())
        except (OSError, ValueError) as exc:
            log.warning("unreadable registry history", extra={"error": str(exc)})
            return
        for kind, count in kinds.items():
            LIFECYCLE.labels(kind).set(count)


def _export(previous: rollout.Rollout | None, current: rollout.Rollout | None) -> None:
    if previous is not None:
        CANARY_INFO.remove(previous.challenger, previous.champion)
    CANARY_SHARE.set(current.share if current else 0.0)
    if current is not None:
        CANARY_INFO.labels(current.challenger, current.champion).set(1)


class CanaryExperiment:
    """`Experiment.assign` with the canary overlay; the canary group is drawn with its own salt, so it takes
    the same share of every variant and a user keeps their group for the whole canary."""

    def __init__(self, experiment: Experiment, follower: RolloutFollower | None) -> None:
        self.experiment = experiment
        self.follower = follower

    @property
    def control(self) -> Variant:
        return self.experiment.control

    @property
    def variants(self) -> list[Variant]:
        return self.experiment.variants

    def assign(self, user_id: str) -> Variant:
        canary = self.follower.current() if self.follower is not None else None
        if canary is not None and _point(f"{self.experiment.salt}:canary:{canary.challenger}", user_id) < canary.share:
            return replace(self.experiment.control, name=canary.variant, share=canary.share,
                           model_version=canary.challenger)
        return self.experiment.assign(user_id)


def _point(salt: str, user_id: str) -> float:
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
