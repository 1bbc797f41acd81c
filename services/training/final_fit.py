"""The final two-tower fit in a child process, beside the rest of training.

torch's second intra-op thread makes a two-tower step only ~1.4x faster on two cores, and the final two-tower model
(fit on all of the data) needs nothing else training fits. So, when there are two cores or more and the data is
large enough to pay for a second interpreter (~3 s to start), the final model is fit in a spawned child with one
torch thread while this process fits the history model, builds the ranker examples and fits the rankers: on the
demo's data `recsys train` took 85 s in one process and 64 s with the child (`benchmarks/train_speed.py`).

The child is `python -m recsys.training.final_fit JOB OUT` (no multiprocessing: it would re-run the caller's main
module); the dataset goes to it and the model comes back as pickles in a temporary folder. The result is the same for
the same seed every time (the child always uses one thread); the child dies with this process
(`recsys.common.children`).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from recsys.common import children
from recsys.model.spec import FeatureSpec
from recsys.training.data.schema import Dataset
from recsys.training.two_tower import TwoTowerConfig, TwoTowerModel

#: below this many interactions the final model is fit in this process, after the rankers
MIN_INTERACTIONS = 50_000


def in_child(threads: int, interactions: int, setting: str) -> bool:
    """Whether the final fit runs in a child: `setting` "on", "off" or "auto" (two threads or more and at least
    MIN_INTERACTIONS interactions)."""
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"final_fit_in_child must be auto, on or off, not {setting!r}")
    if setting == "auto":
        return threads >= 2 and interactions >= MIN_INTERACTIONS
    return setting == "on"


class FinalFit:
    """The final two-tower fit, started in a child at construction; `result()` waits for the model."""

    def __init__(self, ds: Dataset, spec: FeatureSpec, cfg: TwoTowerConfig, seed: int) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="recsys-final-fit-")
        folder = Path(self._dir.name)
        self._job, self._out, self._log = folder / "job.pkl", folder / "model.pkl", folder / "stderr.log"
        with self._job.open("wb") as f:
            pickle.dump((ds, spec, cfg, seed), f, protocol=pickle.HIGHEST_PROTOCOL)
        with self._log.open("wb") as log:
            self._proc = children.spawn([sys.executable, "-m", "recsys.training.final_fit", str(self._job),
                                         str(self._out)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=log, grace_s=2.0)

    def result(self) -> TwoTowerModel:
        """The fitted model; RuntimeError naming the child's last words when it failed."""
        try:
            code = self._proc.wait()
            if code != 0:
                tail = self._log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the final two-tower fit failed in its process (exit code {code}):\n{tail}")
            with self._out.open("rb") as f:
                return pickle.load(f)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the child if it still runs (its fit is abandoned) and remove the folder."""
        if self._proc.poll() is None:
            children.stop(self._proc, grace_s=2.0)
        self._dir.cleanup()


def main(argv: list[str]) -> int:
    """The child: fit on one torch thread what JOB holds and write the model to OUT."""
    from recsys.common.entry import process_defaults

    process_defaults()
    import torch

    from recsys.training.pipeline import fit_two_tower

    job, out = Path(argv[0]), Path(argv[1])
    with job.open("rb") as f:
        ds, spec, cfg, seed = pickle.load(f)
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = fit_two_tower(ds, spec, cfg, progress=False)
    partial = out.with_suffix(".partial")
    with partial.open("wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
    partial.rename(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
