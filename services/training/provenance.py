"""Where a model version came from: the data it saw and the code that trained it (its manifest's record)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pandas as pd

from recsys.training.data.schema import Dataset


def data_fingerprint(ds: Dataset) -> str:
    """sha256 over the interactions (ids, ratings, timestamps) and the catalogue ids, order-sensitive."""
    h = hashlib.sha256()
    inter = ds.interactions[["user_id", "item_id", "rating", "timestamp"]]
    h.update(pd.util.hash_pandas_object(inter.astype({"user_id": str, "item_id": str}), index=False).to_numpy())
    h.update(pd.util.hash_pandas_object(ds.items["item_id"].astype(str), index=False).to_numpy())
    return h.hexdigest()


def code_version() -> dict:
    """The git commit (when the source is in a git checkout with commits) and a hash of the training and model
    code (what decides what a version holds)."""
    here = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(p for package in ("training", "model") for p in (here / package).rglob("*.py")):
        h.update(str(path.relative_to(here)).encode())
        h.update(path.read_bytes())
    sha = None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            sha = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"git_sha": sha, "source_sha256": h.hexdigest()}
