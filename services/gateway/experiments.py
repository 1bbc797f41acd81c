"""Deterministic hash-based assignment of users to experiment variants."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, replace

from recsys.common.config import ConfigError
from recsys.model.exploration import ExplorationPolicy
from recsys.model.rankers import names as ranker_names

RANKERS = ranker_names()


@dataclass(frozen=True)
class Variant:
    """One arm of the experiment: which ranker / model version / retrieval size it serves."""

    name: str
    share: float
    ranker: str = "lightgbm"
    model_version: str = ""
    retrieval_k: int = 0  # 0 = the gateway default
    #: How the served list is drawn from the ranked pool (recsys.model.exploration spec, e.g. "epsilon=0.1,pool=20";
    #: "none" = the top k as ranked). None: the control serves without exploration, every other variant with the
    #: gateway's default (RECSYS_GATEWAY_EXPLORATION).
    exploration: str | None = None
    #: Share of the k slots reserved for new items (the FRESH source); None = RECSYS_GATEWAY_FRESH_SHARE.
    fresh_share: float | None = None

    @property
    def policy(self) -> ExplorationPolicy:
        """The variant's exploration policy (parsed once per spec)."""
        return _policy(self.exploration or "none")


DEFAULT_EXPERIMENT = {
    "salt": "recsys-ab-1",
    "variants": [
        {"name": "control", "share": 0.5, "ranker": "lightgbm"},
        {"name": "dcn", "share": 0.5, "ranker": "dcn"},
    ],
}


class Experiment:
    """Assigns a user to a variant by hashing (salt, user_id) onto [0, 1) and walking cumulative shares."""

    def __init__(self, variants: list[Variant], salt: str, default_exploration: str = "") -> None:
        if not variants:
            raise ConfigError("experiment needs at least one variant")
        total = sum(v.share for v in variants)
        if any(v.share < 0 for v in variants) or abs(total - 1.0) > 1e-6:
            raise ConfigError(f"variant shares must be non-negative and sum to 1 (got {total})")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ConfigError("variant names must be unique")
        for v in variants:
            if v.ranker not in RANKERS:
                raise ConfigError(f"variant {v.name}: unknown ranker {v.ranker!r} (one of {', '.join(RANKERS)})")
            if v.fresh_share is not None and not 0.0 <= v.fresh_share <= 1.0:
                raise ConfigError(f"variant {v.name}: fresh_share must be within 0..1 (got {v.fresh_share})")
        variants = [_with_exploration(v, default_exploration if i else "none") for i, v in enumerate(variants)]
        self.variants = variants
        self.salt = salt
        self._bounds = []
        acc = 0.0
        for v in variants:
            acc += v.share
            self._bounds.append(acc)

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def assign(self, user_id: str) -> Variant:
        """The variant of user_id: the same user always gets the same variant for a given salt."""
        digest = hashlib.sha256(f"{self.salt}:{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        for variant, bound in zip(self.variants, self._bounds, strict=True):
            if point < bound:
                return variant
        return self.variants[-1]

    @classmethod
    def from_json(cls, text: str, default_exploration: str = "") -> Experiment:
        """Parse the RECSYS_EXPERIMENTS document (empty = the default two-arm experiment); variants without an
        `exploration` of their own get `default_exploration`, except the control (the first), which explores
        only when its entry says so."""
        try:
            doc = json.loads(text) if text.strip() else DEFAULT_EXPERIMENT
            variants = [Variant(**v) for v in doc["variants"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"RECSYS_EXPERIMENTS is not a valid experiment: {exc}") from exc
        return cls(variants, str(doc.get("salt", "recsys")), default_exploration)


@functools.lru_cache(maxsize=64)
def _policy(spec: str) -> ExplorationPolicy:
    return ExplorationPolicy.parse(spec)


def _with_exploration(variant: Variant, default: str) -> Variant:
    """The variant with its exploration spec resolved (its own, else `default`) and checked."""
    spec = variant.exploration if variant.exploration is not None else default
    try:
        policy = _policy(spec or "none")
    except ValueError as exc:
        raise ConfigError(f"variant {variant.name}: invalid exploration {spec!r}: {exc}") from exc
    return replace(variant, exploration=policy.spec())
