"""Shared pytest setup: local state of tests stays under a temporary RECSYS_VAR_DIR."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_var_dir(tmp_path_factory: pytest.TempPathFactory):
    os.environ.setdefault("RECSYS_VAR_DIR", str(tmp_path_factory.mktemp("var")))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    yield
