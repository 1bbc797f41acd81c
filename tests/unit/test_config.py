"""Environment configuration parsing and the declared-variable registry."""

import re
from pathlib import Path

import pytest

from recsys import config_commands
from recsys.common import config


def test_typed_reads(monkeypatch):
    var = config.declare("RECSYS_TEST_ONLY_VALUE", 3, "test", scope="test")
    assert var.int() == 3
    monkeypatch.setenv("RECSYS_TEST_ONLY_VALUE", "7")
    assert var.int() == 7 and var.float() == 7.0
    monkeypatch.setenv("RECSYS_TEST_ONLY_VALUE", "seven")
    with pytest.raises(config.ConfigError, match="RECSYS_TEST_ONLY_VALUE"):
        var.int()
    monkeypatch.setenv("RECSYS_TEST_ONLY_VALUE", "a, b,,c")
    assert var.list() == ["a", "b", "c"]
    config.REGISTRY.pop("RECSYS_TEST_ONLY_VALUE")


def test_conflicting_declarations_are_refused():
    first = config.declare("RECSYS_TEST_ONLY_TWICE", 1, "x", scope="test")
    assert config.declare("RECSYS_TEST_ONLY_TWICE", 1, "other words", scope="test") is first
    with pytest.raises(config.ConfigError):
        config.declare("RECSYS_TEST_ONLY_TWICE", 2, "x", scope="test")
    config.REGISTRY.pop("RECSYS_TEST_ONLY_TWICE")


def test_every_declared_variable_is_in_the_readme_table():
    config_commands.declare_all()  # imports every settings module, declaring their variables
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(RECSYS_[A-Z0-9_]+)` \|", readme, flags=re.M))
    declared = {name for name in config.REGISTRY if not name.startswith("RECSYS_TEST_ONLY")}
    assert declared - documented == set(), "add these to the README configuration table"
    assert documented - declared == set(), "the README documents variables no code reads"
