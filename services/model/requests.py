"""Retrain requests in the registry: `<models>/retrain.request`, written by whoever wants a retrain (the monitoring
service when drift acts, `recsys retrain --request`) and taken by the lifecycle loop `recsys serve` runs.

One file, so requests do not pile up: a pending request absorbs the next ones until the loop takes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

REQUEST = "retrain.request"


def request_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / REQUEST


def request_retrain(models_dir: str | Path, reason: str) -> Path:
    """Ask for a retrain (written atomically); returns the request file."""
    path = request_path(models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{REQUEST}.{os.getpid()}")
    tmp.write_text(json.dumps({"reason": reason, "at": time.time()}))
    os.replace(tmp, path)
    return path


def pending(models_dir: str | Path) -> bool:
    """Whether a request waits for the loop."""
    return request_path(models_dir).exists()


def age_s(models_dir: str | Path, now: float | None = None) -> float | None:
    """Seconds since the pending request was made (None: none pending)."""
    path = request_path(models_dir)
    try:
        at = float(json.loads(path.read_text()).get("at", 0.0))
    except FileNotFoundError:
        return None
    except (ValueError, AttributeError, TypeError, OSError):
        at = 0.0  # unreadable: treat as old
    return (time.time() if now is None else now) - at


def take_request(models_dir: str | Path) -> str | None:
    """The pending request's reason, removing it; None when there is none."""
    path = request_path(models_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    try:
        return str(json.loads(text).get("reason", "request"))
    except (ValueError, AttributeError):
        return "request"
