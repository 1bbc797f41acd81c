"""LightGBM imported without its optional scikit-learn integration (once per process).

`lightgbm.compat` imports scikit-learn (and SciPy) only for the `LGBMModel` wrappers; recsys uses
`lightgbm.Booster` and `lightgbm.train` alone. Measured on 2 cores: `import lightgbm` 1.38 s -> 0.18 s, on
the ranking replica's start path. scikit-learn stays importable afterwards; only LightGBM's sklearn
wrappers are off in this process. A process that already imported LightGBM is left as it is.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any


class _NoSklearn(importlib.abc.MetaPathFinder):
    """Makes `sklearn` unimportable while LightGBM is imported."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError(f"{name} is not imported by recsys' LightGBM")
        return None


def _import() -> Any:
    if "lightgbm" not in sys.modules:
        blocker = _NoSklearn()
        sys.meta_path.insert(0, blocker)
        try:
            import lightgbm  # noqa: F401
        finally:
            sys.meta_path.remove(blocker)
    return sys.modules["lightgbm"]


lgb = _import()
