"""LightGBM lambdarank fit data-parallel on Ray Train: a LightGBMTrainer of N CPU workers, resumable after a worker
dies.

The examples are cut into N shards of whole queries (a user's rows never straddle two workers: lambdarank compares
rows within a query only) of about equal rows; each shard goes to Ray's object store and its worker reads only its
own. The workers grow the same trees together (LightGBM's `data_parallel` learner, `pre_partition`: each holds its
shard, over the sockets Ray Train sets up, one thread each). Rank 0 writes a checkpoint (the booster so far) every
`checkpoint_every` trees and after the last one; a group restarted after a worker died goes on from the latest
registered checkpoint (`init_model`). The calibration is fit in the caller on every row, as `train_lgbm` does: the
result is the same `LGBMRankerModel`, so serving cannot tell how it was trained.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np

from recsys.model.rankers.lightgbm import MODEL_FILE, LGBMConfig, LGBMRankerModel
from recsys.training.examples import normalized_weights
from recsys.training.lgbm import calibrated, lgbm_params, query_sizes

#: the parameters a distributed fit sets, with the values a one-process fit saves (LightGBM's defaults)
ONE_PROCESS_PARAMS = {"tree_learner": "serial", "pre_partition": "0", "num_machines": "1", "machines": "",
                      "local_listen_port": "12400"}


def query_shards(sizes: np.ndarray, workers: int) -> list[tuple[int, int, int, int]]:
    """(first row, end row, first query, end query) of `workers` shards of whole queries (`sizes`: each query's
    rows, in order), each cut at the query boundary nearest to an equal share of the rows; at most one shard per
    query, none empty."""
    starts = np.r_[0, np.cumsum(sizes)]
    n_queries, n = len(sizes), int(starts[-1])
    workers = max(1, min(workers, n_queries))
    cuts = [0]
    for k in range(1, workers):
        target = k * n / workers
        q = int(np.searchsorted(starts, target))
        if q > 0 and target - starts[q - 1] < starts[q] - target:
            q -= 1
        cuts.append(min(max(q, cuts[-1] + 1), n_queries - (workers - k)))
    cuts.append(n_queries)
    return [(int(starts[a]), int(starts[b]), a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


def _worker_loop(config: dict) -> None:
    import ray
    import ray.train
    from ray.train.lightgbm import get_network_params

    rank = ray.train.get_context().get_world_rank()
    x, y, sizes, w = ray.get(config["shards"][rank])
    params = {**config["params"], "tree_learner": "data_parallel", "pre_partition": True, **get_network_params()}
    total, every = config["n_estimators"], config["checkpoint_every"]
    booster, done = None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            booster = lgb.Booster(model_file=str(Path(folder) / MODEL_FILE))
        done = booster.current_iteration()
    if done >= total:
        return

    def report(env: lgb.callback.CallbackEnv) -> None:
        trees = env.iteration + 1
        if trees % every and trees != total:
            return
        metrics = {"trees": trees, "resumed_at": done}
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            env.model.save_model(str(Path(folder) / MODEL_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    data = lgb.Dataset(x, label=y, group=sizes, weight=w, feature_name=config["features"])
    lgb.train(params, data, num_boost_round=total - done, init_model=booster, callbacks=[report])


def train_lgbm_ray(
    x: np.ndarray, y: np.ndarray, group: np.ndarray, features: list[str], cfg: LGBMConfig, workers: int,
    storage: Path, weights: np.ndarray | None = None, max_failures: int = 3, name: str = "lgbm",
    checkpoint_every: int = 100,
) -> LGBMRankerModel:
    """Fit the lambdarank ranker on `workers` Ray Train workers (Ray must be initialised: `ray_cluster.ray_for`);
    `group` gives each row's query (rows grouped contiguously), `weights` per-row gradient weights (normalised to
    mean 1 over all rows, as `train_lgbm` does). Checkpoints go under `storage`/`name`, one every
    `checkpoint_every` trees: not many, as a report waits until the controller has polled the one before (every
    2 s). Fewer workers than asked when there are fewer queries. Returns the same ranker type as `train_lgbm`."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.lightgbm import LightGBMTrainer

    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    w = None if weights is None else normalized_weights(weights, len(y))
    sizes = query_sizes(group)
    shards = [ray.put((x[a:b], y[a:b], sizes[qa:qb], None if w is None else w[a:b]))
              for a, b, qa, qb in query_shards(sizes, workers)]
    trainer = LightGBMTrainer(
        _worker_loop,
        train_loop_config={"shards": shards, "params": lgbm_params(cfg, 1), "features": features,
                           "n_estimators": cfg.n_estimators, "checkpoint_every": max(1, checkpoint_every)},
        scaling_config=ScalingConfig(num_workers=len(shards), use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        text = (Path(folder) / MODEL_FILE).read_text()
    return calibrated(lgb.Booster(model_str=_as_one_process(text)), x, y, cfg, features)


def _as_one_process(model_text: str) -> str:
    """The model text with the distributed fit's parameter lines ("[machines: ...]") as a one-process fit saves
    them: the trees are the whole model, these lines only record how it was fit."""
    lines = model_text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        key = line[1:line.find(":")] if line.startswith("[") else ""
        if key in ONE_PROCESS_PARAMS:
            lines[i] = f"[{key}: {ONE_PROCESS_PARAMS[key]}]\n"
    return "".join(lines)
