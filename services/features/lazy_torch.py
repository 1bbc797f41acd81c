"""Feast without its eager torch import.

`feast.torch_wrapper` imports torch when Feast is imported (about 1.4 s and 200 MB here), only so that
`OnlineResponse.to_torch()` and the RAG retriever can call `get_torch()`. The feature service never does, and a
restarted feature service is an outage until it serves again. `install()` registers a `feast.torch_wrapper` whose
`get_torch()` imports torch on first use instead: the same API, paid for only by a caller that needs it.
"""

from __future__ import annotations

import sys
import types


def _get_torch():
    """Feast's `get_torch()`: the torch module, imported now (ImportError when torch is not installed)."""
    import torch

    return torch


def install() -> None:
    """Register the lazy `feast.torch_wrapper` unless Feast's own is imported already (then nothing to save)."""
    if "feast.torch_wrapper" in sys.modules:
        return
    module = types.ModuleType("feast.torch_wrapper", __doc__)
    module.get_torch = _get_torch  # type: ignore[attr-defined]
    sys.modules["feast.torch_wrapper"] = module
