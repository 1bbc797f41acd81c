"""Settings of the offline jobs (scope `training`): read by their commands, declared once here."""

from __future__ import annotations

from recsys.common.config import declare

CANARY_SHARE = declare(
    "RECSYS_CANARY_SHARE", 0.2, "Share of users a challenger that passed `recsys retrain`'s gate is served to first "
    "(a canary against `latest`); 0 = promote it to `latest` at once", scope="training"
)
WINDOW_HOURS = declare(
    "RECSYS_RETRAIN_WINDOW_HOURS", 0.0, "`recsys retrain`'s held-out window when neither --window-frac nor "
    "--window-hours is given: the last H hours of the data (0 = the last 10% of the interactions)", scope="training"
)
TRAIN_CONFIG = declare(
    "RECSYS_TRAIN_CONFIG", "", "JSON file of training settings (as `--config`) for `recsys train` and `recsys retrain` "
    "when they name no --config (the lifecycle loop's and the chart's retrains included); empty = the defaults",
    scope="training"
)
