"""The garbage collector and long-lived servers."""

from __future__ import annotations

import gc


def freeze_heap() -> None:
    """Exempt the objects alive now (libraries, models, registries: 100k+ objects) from the collector's full
    passes, which otherwise take tens of milliseconds to ~0.2 s each (Feast) and show up in tail latencies.
    Call once, after start-up; what is allocated later is collected as usual."""
    gc.collect()
    gc.freeze()


def refreeze_heap() -> None:
    """After a swap (new models in, old ones unreachable): thaw, collect what died, and freeze again, so that
    frozen objects that became garbage are not kept for the life of the process."""
    gc.unfreeze()
    freeze_heap()
