"""Services whose restart is an outage do not import torch at start-up (it costs ~1.3 s and ~200 MB)."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_feature_service_imports_feast_without_torch_and_feast_still_gets_torch_on_demand():
    out = _run(
        "import sys, recsys.features.main, feast.online_response;"
        "print('torch' in sys.modules);"
        "from feast.torch_wrapper import get_torch;"
        "print(get_torch().__name__)"
    )
    assert out.splitlines() == ["False", "torch"]


def test_candidate_service_embeds_users_without_torch():
    out = _run(
        "import sys, recsys.candidates.server;"
        "from recsys.model.user_encoder import UserEncoder;"
        "print('torch' in sys.modules)"
    )
    assert out == "False"
