"""Same data, same answers: the candidate service over Milvus Lite and over a real Milvus standalone.

The standalone comes from the PyPI package `milvus` (2.3.5, in the test extra). It binds every interface
with no setting to change that, so it only runs inside a loopback-only network namespace (`unshare -n`,
then `ip link set lo up`); the whole server-side run (Milvus, indexing, the service, the client) happens
in that namespace in one subprocess, which prints its answers. Skipped where the package is missing or
namespaces cannot be created (not root, no `unshare`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from candidates_support import train_registry  # noqa: E402

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("candidates_compare_app.py")


def _netns_available() -> str | None:
    if importlib.util.find_spec("milvus") is None:
        return "the `milvus` package (test extra) is not installed"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "`unshare` / `ip` not available"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.decode().strip()[:200]}"
    return None


def _run(cmd: list[str], timeout: float) -> list[dict]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def test_milvus_lite_and_milvus_server_give_the_same_answers(tmp_path):
    reason = _netns_available()
    if reason:
        pytest.skip(reason)
    registry = train_registry(tmp_path / "models", versions=1)
    lite = _run([sys.executable, str(APP), str(registry.root), str(tmp_path)], timeout=300)
    inner = f"ip link set lo up && exec {sys.executable} {APP} {registry.root} {tmp_path} --server"
    server = _run(["unshare", "-n", "sh", "-c", inner], timeout=400)
    assert len(lite) == len(server) > 0
    for a, b in zip(lite, server, strict=True):
        assert not a["degraded"] and not b["degraded"]
        ids_a = [c[0] for c in a["candidates"]]
        ids_b = [c[0] for c in b["candidates"]]
        assert ids_a == ids_b, (a["method"], ids_a[:10], ids_b[:10])
        assert [c[2] for c in a["candidates"]] == [c[2] for c in b["candidates"]]
        for ca, cb in zip(a["candidates"], b["candidates"], strict=True):
            assert abs(ca[1] - cb[1]) < 1e-3
