"""DCN-v2 fit data-parallel on Ray Train: a TorchTrainer of N CPU workers (gloo), resumable after a worker dies.

Every worker holds the standardised examples (one copy in Ray's object store) and, each epoch, walks the same
seeded permutation in global batches of `cfg.batch_size`, taking its 1/N of each: the steps are the same on every
worker (DDP needs that) and together they see what one process would, with the gradients averaged. The rank-0
worker writes a checkpoint after every epoch (weights, optimizer, scheduler, epoch) into the run's storage; when a
worker dies, Ray Train restarts the group (`FailureConfig.max_failures`) and each worker resumes from the latest
checkpoint its controller registered. A folder on disk is not yet one: the controller registers a checkpoint once it
has polled every worker's report of it (every `RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, 2 s), so a worker that dies
sooner restarts the group from the one before. The result is the same `DCNRanker` as `train_dcn`'s: serving cannot
tell how it was trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recsys.model.rankers.dcn import DCNConfig, DCNRanker, DCNv2
from recsys.training.dcn import flushed_denormals, new_ranker
from recsys.training.examples import normalized_weights
from recsys.training.ray_epochs import AfterCheckpoint, end_epoch, final_state, resume


def _worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch.nn.functional as F

    cfg: DCNConfig = config["cfg"]
    after_checkpoint: AfterCheckpoint | None = config["after_checkpoint"]
    x_all = torch.from_numpy(config["x"])
    y_all = torch.from_numpy(config["y"])
    w_all = None if config["w"] is None else torch.from_numpy(config["w"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    net = DCNv2(x_all.shape[1], cfg)
    n, batch = len(y_all), config["batch_size"]
    steps = max(1, n // batch)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps * cfg.epochs, pct_start=0.1)
    start = resume(net, opt, sched)
    model = ray.train.torch.prepare_model(net)
    with flushed_denormals():
        for epoch in range(start, cfg.epochs):
            model.train()
            perm = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(n))
            total = 0.0
            for s in range(steps):
                b = perm[s * batch:(s + 1) * batch][rank::world]
                logits = model(x_all[b])
                loss = F.binary_cross_entropy_with_logits(logits, y_all[b],
                                                          weight=None if w_all is None else w_all[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach())
            metrics = {"epoch": epoch, "loss": total / steps, "resumed_at": start}
            end_epoch(metrics, epoch, rank, net, opt, sched, after_checkpoint)


def train_dcn_ray(
    x: np.ndarray, y: np.ndarray, features: list[str], cfg: DCNConfig, workers: int, storage: Path,
    weights: np.ndarray | None = None, max_failures: int = 3, name: str = "dcn",
    after_checkpoint: AfterCheckpoint | None = None,
) -> tuple[DCNRanker, dict]:
    """Fit DCN-v2 on `workers` Ray Train workers (Ray must be initialised: `ray_cluster.ray_for`); checkpoints go
    under `storage`/`name`. Returns the ranker and the metrics reported with the last registered checkpoint (epoch,
    loss, resumed_at: the epoch the attempt that wrote it started from, > 0 after a worker died and the group
    resumed from a checkpoint). `after_checkpoint` (pickled to the workers; tests kill a worker from it) runs on
    every worker after each epoch once Ray Train's controller has registered that epoch's checkpoint (each worker
    then waits for that, up to a poll interval an epoch)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ranker = new_ranker(x, features, cfg)
    xs = ranker._prepare(x).numpy()
    w = None if weights is None else normalized_weights(weights, len(y)).astype(np.float32)
    batch_size = int(min(cfg.batch_size, max(64 * workers, len(x) // max(cfg.min_steps_per_epoch, 1))))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg, "x": xs, "y": np.asarray(y, dtype=np.float32), "w": w,
                           "batch_size": batch_size, "after_checkpoint": after_checkpoint},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    ranker.net.load_state_dict(final_state(result.checkpoint))
    ranker.net.eval()
    return ranker, dict(result.metrics or {})
