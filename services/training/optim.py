"""The optimisation step shared by the PyTorch trainers (two-tower, DCN-v2)."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
         bar: tqdm) -> float:
    """One backward pass and optimizer + scheduler step; advances the progress bar, returns the loss value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    bar.update(1)
    return float(loss.detach())
