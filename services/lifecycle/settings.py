"""Configuration of the model lifecycle loop (canary decisions and scheduled retrains)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recsys.common import config
from recsys.common.config import declare
from recsys.model.rollout import CanaryPolicy

SCOPE = "lifecycle"
MONITORING_ADDR = config.MONITORING_ADDR
MIN_IMPRESSIONS = declare(
    "RECSYS_CANARY_MIN_IMPRESSIONS", 2000, "Impressions of the canary variant before it may be promoted", SCOPE
)
TOLERANCE = declare(
    "RECSYS_CANARY_TOLERANCE", 0.02,
    "Promote once the canary's CTR-lift interval (95%) lower bound is above -this; roll back when its upper bound "
    "is below 0", SCOPE,
)
MAX_AGE_S = declare("RECSYS_CANARY_MAX_AGE_S", 86_400.0, "A canary undecided after this long is rolled back", SCOPE)
CHECK_S = declare("RECSYS_CANARY_CHECK_S", 30.0, "Seconds between canary decisions in `recsys serve`", SCOPE)
RETRAIN_INTERVAL_S = declare(
    "RECSYS_RETRAIN_INTERVAL_S", 0.0,
    "Seconds between scheduled `recsys retrain` runs in `recsys serve` (0 = only on demand)", SCOPE,
)
RETRAIN_BASE = declare(
    "RECSYS_RETRAIN_BASE", "",
    "Dataset folder `recsys serve`'s retrains join the event log with (empty = <RECSYS_VAR_DIR>/demo-data)", SCOPE,
)
RETRAIN_DELAY_S = declare(
    "RECSYS_RETRAIN_DELAY_S", 0.0,
    "A requested retrain (drift, `recsys retrain --request`) waits until the request is this old, so that the "
    "data after a shift is there to learn from", SCOPE,
)


@dataclass(frozen=True)
class LifecycleSettings:
    """What the lifecycle loop reads from the environment."""

    monitoring_addr: str
    models_dir: Path
    var_dir: Path
    policy: CanaryPolicy
    check_s: float
    retrain_interval_s: float
    retrain_base: Path
    retrain_delay_s: float = 0.0

    @classmethod
    def from_env(cls) -> LifecycleSettings:
        var_dir = Path(config.VAR_DIR.str())
        return cls(
            monitoring_addr=MONITORING_ADDR.str(),
            models_dir=Path(config.MODELS_DIR.str()),
            var_dir=var_dir,
            policy=CanaryPolicy(MIN_IMPRESSIONS.int(), TOLERANCE.float(), MAX_AGE_S.float()),
            check_s=max(1.0, CHECK_S.float()),
            retrain_interval_s=max(0.0, RETRAIN_INTERVAL_S.float()),
            retrain_base=Path(RETRAIN_BASE.str()) if RETRAIN_BASE.str() else var_dir / "demo-data",
            retrain_delay_s=max(0.0, RETRAIN_DELAY_S.float()),
        )
