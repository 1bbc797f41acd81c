"""The gateway image's short list of pins ([tool.recsys.images] gateway) covers what the gateway really imports."""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "ray", "feast", "pymilvus", "evidently", "lightgbm", "milvus_lite", "sklearn"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[=<>;!~]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions named and everything they require (transitively, extras left out)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


# Run in a fresh interpreter: every module of an installed distribution outside the allowed set fails to import,
# as it would in the gateway image (optional imports, e.g. pyarrow's cloudpickle, then take their fallback).
IMPORT_WITH_ONLY = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class OnlyTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the gateway image)", name=name)
sys.meta_path.insert(0, OnlyTheImage())
import recsys.gateway.__main__, recsys.common.healthcheck
print(" ".join(sorted(sys.modules)))
"""


def test_gateway_imports_with_only_its_pins_and_nothing_heavy():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pinned = {_name(d) for d in project["project"]["dependencies"]}
    listed = {n.lower() for n in project["tool"]["recsys"]["images"]["gateway"]}
    assert listed <= pinned, f"not pinned in [project] dependencies: {listed - pinned}"
    allowed = _closure(listed) | {"recsys"}
    owners: dict[str, set[str]] = {}
    for module, dists in md.packages_distributions().items():
        for dist in dists:
            owners.setdefault(module, set()).add(_name(dist))
    blocked = {module for module, dists in owners.items() if not dists & allowed}
    done = subprocess.run([sys.executable, "-c", IMPORT_WITH_ONLY, ",".join(sorted(blocked))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the gateway needs more than [tool.recsys.images] gateway:\n{done.stderr[-2000:]}"
    top = {m.split(".")[0] for m in done.stdout.split()}
    assert not top & HEAVY, f"the gateway imports {top & HEAVY}: its image would need them"
    assert "torch" in blocked and "ray" in blocked  # the check itself can fail
