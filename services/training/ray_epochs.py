"""What every torch fit on Ray Train does around its epochs (ray_dcn.py, ray_two_tower.py): resume from the latest
registered checkpoint, and after each epoch report its metrics with a checkpoint from rank 0.

A checkpoint holds the net, the optimizer, the LR schedule and the epoch it closed (`STATE_FILE`). A folder on disk
is not yet one Ray resumes from: the controller registers it once it has polled every worker's report of it (every
2 s), so the `after_checkpoint` hook (tests kill a worker from it) first waits for that.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

STATE_FILE = "state.pt"

#: called on every worker with (rank, epoch, resumed_at) once the epoch's checkpoint is registered
AfterCheckpoint = Callable[[int, int, int], None]


def resume(net: torch.nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler) -> int:
    """Load the latest registered checkpoint of this run into net, opt and sched; the epoch to start from."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, weights_only=False)
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return int(state["epoch"]) + 1


def end_epoch(metrics: dict, epoch: int, rank: int, net: torch.nn.Module, opt: torch.optim.Optimizer,
              sched: torch.optim.lr_scheduler.LRScheduler, after_checkpoint: AfterCheckpoint | None = None) -> None:
    """Report the epoch's metrics (rank 0 with a checkpoint), then run `after_checkpoint` once it is registered."""
    import ray.train

    if rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "epoch": epoch}, Path(folder) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report(metrics)
    if after_checkpoint is not None:
        # blocks until the controller has registered every report so far, this epoch's checkpoint included
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        after_checkpoint(rank, epoch, int(metrics["resumed_at"]))


def final_state(result_checkpoint) -> dict:
    """The net's state dict in a run's last registered checkpoint."""
    with result_checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, weights_only=False)["model"]
