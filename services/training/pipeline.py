"""Train every model on a dataset (the two-stage pipeline offline, batch inference included, is `two_stage`).

Training (`train_all`):
1. Ranker examples come from a label window inside the data: each user's last `label_frac` of
   interactions are labels, the rest is history. A two-tower model fit on the history retrieves each
   user's top candidates; positives are the label items among them (the ranker only ever sees
   candidates; `outside_positives` adds the missed ones too), negatives are other candidates (hard)
   plus random items, all with features computed from the history only (what serving would have known).
   A dataset built from the event log (`ds.exposures`) adds the items each user was shown in the label
   window and did not click as negatives, and weighs logged clicks by 1 / propensity of their position.
2. DCN-v2 and LightGBM are fit on those examples.
3. The final two-tower model, the ALS baseline and popularity are fit on all of the data, and the
   feature tables are computed on all of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.common.errors import CliError
from recsys.model.bundle import ModelBundle
from recsys.model.ids import IdIndex
from recsys.model.rankers.dcn import DCNConfig
from recsys.model.rankers.lightgbm import LGBMConfig
from recsys.model.spec import FeatureSpec
from recsys.training.data.schema import Dataset, validate
from recsys.training.dcn import train_dcn
from recsys.training.examples import RankingExamples, build_examples
from recsys.training.exposures import label_window_feedback
from recsys.training.features import build_feature_spec, build_item_features, build_user_features, build_user_history
from recsys.training.final_fit import FinalFit, in_child
from recsys.training.lgbm import train_lgbm
from recsys.training.matrix import InteractionMatrix
from recsys.training.mf import ALS, ALSConfig
from recsys.training.split import holdout_mask
from recsys.training.two_stage import TwoStage, spec_as_of
from recsys.training.two_tower import TwoTowerConfig, TwoTowerModel, train_two_tower


@dataclass
class TrainConfig:
    seed: int = 0
    threads: int = 2
    candidates: int = 300
    label_frac: float = 0.2
    n_hard: int = 100
    n_random: int = 20
    max_pos: int = 50
    max_exposed: int = 100  # logged exposure-aware negatives per user (only when the data has exposures)
    outside_positives: bool = False
    default_ranker: str = "lgbm"
    #: "auto" | "on" | "off": fit the final two-tower model in a child process beside the rest (`final_fit`)
    final_fit_in_child: str = "auto"
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    dcn: DCNConfig = field(default_factory=DCNConfig)
    lgbm: LGBMConfig = field(default_factory=LGBMConfig)

    def with_seed(self, seed: int) -> TrainConfig:
        return replace(
            self,
            seed=seed,
            two_tower=replace(self.two_tower, seed=seed),
            als=replace(self.als, seed=seed),
            dcn=replace(self.dcn, seed=seed),
            lgbm=replace(self.lgbm, seed=seed),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Defaults overridden by `data` (nested dicts for the model sections); unknown keys raise ValueError."""
        base = cls()
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown config key {key!r}")
            section = getattr(base, key)
            if is_dataclass(section):
                if not isinstance(value, dict):
                    raise ValueError(f"config key {key!r} must be an object")
                names = {f.name for f in fields(section)}
                bad = sorted(set(value) - names)
                if bad:
                    raise ValueError(f"unknown config key(s) {', '.join(f'{key}.{b}' for b in bad)}")
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                kwargs[key] = replace(section, **value)
            else:
                kwargs[key] = value
        return replace(base, **kwargs)


class DatasetError(CliError):
    """The dataset cannot be trained or evaluated on; the message says why (exit code 2 in the CLI)."""


def validate_dataset(ds: Dataset) -> None:
    """Raise DataError / DatasetError naming what is wrong (missing columns, no interactions, unknown ids)."""
    validate(ds)
    if ds.interactions["user_id"].nunique() < 2:
        raise DatasetError(f"dataset {ds.name!r}: needs interactions of at least two users")


@contextmanager
def determinism(seed: int, threads: int) -> Iterator[None]:
    """Same seed, same results: seeded torch and a fixed thread count (restored after).

    On the CPU the kernels these models use are deterministic for a fixed thread count (measured: two fits
    with one seed give bit-identical embeddings and weights; `test_same_seed_same_models` holds it), so
    `torch.use_deterministic_algorithms` is left off: its sort-based embedding backward and index paths cost
    about a quarter of the two-tower step time for nothing here."""
    torch.manual_seed(seed)
    with torch_threads(threads):
        yield


@dataclass
class RayFit:
    """Fit on Ray Train: both two-tower models (`ray_two_tower`) and DCN-v2 on TorchTrainers, LightGBM on its
    LightGBMTrainer, each in turn on `workers` one-CPU workers of the Ray the caller initialised
    (`ray_cluster.ray_for`), checkpoints under `storage`."""

    workers: int
    storage: Path


def two_tower_inputs(ds: Dataset, spec: FeatureSpec) -> tuple:
    """`train_two_tower`'s data arguments for `ds`: users, items (IdIndex), user and item feature rows, and the
    interactions as user rows, item rows, timestamps."""
    inter = ds.interactions
    items = IdIndex(ds.items["item_id"].astype(object))
    users = IdIndex(pd.unique(inter["user_id"].astype(object)))
    uf = build_user_features(ds, spec)
    uf_mat = uf.set_index(uf["user_id"].astype(object)).reindex(users.ids)[spec.user_features]
    if_mat = build_item_features(ds, spec)[spec.item_features]
    return (users, items, uf_mat.to_numpy(np.float32), if_mat.to_numpy(np.float32), users.lookup(inter["user_id"]),
            items.lookup(inter["item_id"]), inter["timestamp"].to_numpy())


def fit_two_tower(ds: Dataset, spec: FeatureSpec, cfg: TwoTowerConfig, progress: bool,
                  init: TwoTowerModel | None = None, ray_fit: RayFit | None = None,
                  name: str = "two_tower") -> TwoTowerModel:
    """The two-tower model of `ds`'s interactions (fine-tuned from `init` when given): in this process, or with
    `ray_fit` on Ray Train (`ray_two_tower`, its checkpoints under `ray_fit.storage`/`name`)."""
    if ray_fit is None:
        return train_two_tower(*two_tower_inputs(ds, spec), cfg, progress, init)
    from recsys.training.ray_two_tower import train_two_tower_ray

    return train_two_tower_ray(*two_tower_inputs(ds, spec), cfg, ray_fit.workers, ray_fit.storage, init, name)[0]


def _provisional_bundle(ds: Dataset, spec: FeatureSpec, tt: TwoTowerModel) -> ModelBundle:
    """A bundle with only the retrieval half (used to generate ranker candidates)."""
    return ModelBundle(
        spec=spec,
        user_features=build_user_features(ds, spec),
        item_features=build_item_features(ds, spec),
        user_history=build_user_history(ds, spec),
        items=tt.items,
        item_embeddings=tt.item_embeddings(),
        encoder=tt.encoder(),
        rankers={},
        popularity=np.zeros(len(tt.items), np.float32),
        two_tower=tt,
    )


def label_window_examples(
    stage: TwoStage, ds: Dataset, labels: pd.DataFrame, cfg: TrainConfig, rng: np.random.Generator
) -> RankingExamples:
    """Ranking examples whose positives are `labels` and whose features/candidates come from `ds`."""
    users = list(pd.unique(labels["user_id"].astype(object)))
    state = stage.state(ds, users)
    cand, _ = stage.retrieve(state, cfg.candidates)
    label_m = InteractionMatrix.from_interactions(labels, stage.items, IdIndex(users))
    positives = label_m.seen(np.arange(len(users)))
    logged = None
    if ds.exposures is not None and len(ds.exposures):
        logged = label_window_feedback(ds.exposures, labels, label_m.users, stage.items)
    return build_examples(
        stage.spec, state.features, stage.item_feats, stage.user_embeddings(state), stage.item_emb,
        cand, positives, state.seen, cfg.n_hard, cfg.n_random, cfg.max_pos, rng, cfg.outside_positives,
        logged, cfg.max_exposed,
    )


def train_rankers(examples: RankingExamples, spec: FeatureSpec, cfg: TrainConfig, progress: bool,
                  ray_fit: RayFit | None = None) -> dict:
    """DCN-v2 and LightGBM on the same examples, side by side when `cfg.threads` >= 2: LightGBM on one core in a
    background thread (its C++ releases the GIL), DCN-v2 on the other with one torch thread (small matrices gain
    little from a second torch thread; `benchmarks/train_speed.py` measures the whole). Each result is the same
    for the same seed: neither shares random state with the other, and LightGBM's trees do not depend on its
    thread count (`deterministic`). With `ray_fit`, both on Ray Train instead (`_train_rankers_on_ray`)."""
    if len(examples) == 0 or examples.y.min() == examples.y.max():
        raise DatasetError("too few interactions per user to build ranking examples (need labels of both kinds)")
    names = spec.ranking_features
    if ray_fit is not None:
        return _train_rankers_on_ray(examples, names, cfg, ray_fit)
    side_by_side = cfg.threads >= 2
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightgbm") as pool:
        lgbm = pool.submit(train_lgbm, examples.x, examples.y, examples.group, names, cfg.lgbm, progress,
                           examples.weight, 1 if side_by_side else None)
        if not side_by_side:
            lgbm.result()  # one core: one fit after the other
        with torch_threads(1 if side_by_side else cfg.threads):
            dcn = train_dcn(examples.x, examples.y, names, cfg.dcn, progress, weights=examples.weight)
        return {"dcn": dcn, "lgbm": lgbm.result()}


def _train_rankers_on_ray(examples: RankingExamples, names: list[str], cfg: TrainConfig, ray_fit: RayFit) -> dict:
    """LightGBM, then DCN-v2, on Ray Train: one after the other, as each takes every worker."""
    from recsys.training.ray_dcn import train_dcn_ray
    from recsys.training.ray_lgbm import train_lgbm_ray

    lgbm = train_lgbm_ray(examples.x, examples.y, examples.group, names, cfg.lgbm, ray_fit.workers,
                          ray_fit.storage, weights=examples.weight)
    dcn, _ = train_dcn_ray(examples.x, examples.y, names, cfg.dcn, ray_fit.workers, ray_fit.storage,
                           weights=examples.weight)
    return {"dcn": dcn, "lgbm": lgbm}


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n inside the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_all(ds: Dataset, cfg: TrainConfig | None = None, progress: bool = True,
              ray_fit: RayFit | None = None) -> tuple[ModelBundle, dict]:
    """Fit every model on `ds` (see the module docstring). Returns the bundle and per-step timings (s). With
    `ray_fit`, the two-tower models (the history one and the final one) and the rankers (DCN-v2, LightGBM) are fit
    on Ray Train, one after the other (no final-fit child); ALS and the rest as without."""
    cfg = cfg or TrainConfig()
    validate_dataset(ds)
    with determinism(cfg.seed, cfg.threads):
        return _train_all(ds, cfg, progress, ray_fit)


def _train_all(ds: Dataset, cfg: TrainConfig, progress: bool, ray_fit: RayFit | None) -> tuple[ModelBundle, dict]:
    rng = np.random.default_rng(cfg.seed)
    timings: dict[str, float] = {}
    steps = tqdm(total=5, desc="train", unit="step", disable=not progress)

    def done(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        steps.set_postfix_str(f"{name} {timings[name]}s")
        steps.update(1)

    spec = build_feature_spec(ds)
    t0 = time.perf_counter()
    # the final retrieval model: in a child process beside everything else when that pays (`final_fit`); it
    # continues from the one fit on the history when finetune_epochs > 0, so then it waits for that one; with
    # `ray_fit` on Ray Train after the rankers (each fit takes every worker)
    child = None
    if ray_fit is None and cfg.two_tower.finetune_epochs == 0 and in_child(
            cfg.threads, len(ds.interactions), cfg.final_fit_in_child):
        child = FinalFit(ds, spec, cfg.two_tower, cfg.seed)
    try:
        mask = holdout_mask(ds.interactions, "temporal", cfg.label_frac)
        hist_ds = replace(ds, interactions=ds.interactions.loc[~mask].reset_index(drop=True))
        labels = ds.interactions.loc[mask]
        hist_spec = spec_as_of(spec, hist_ds)
        with torch_threads(1 if child else cfg.threads):
            tt_hist = fit_two_tower(hist_ds, hist_spec, cfg.two_tower, progress, ray_fit=ray_fit,
                                    name="two_tower_history")
        done("retrieval_for_ranker_examples", t0)

        t0 = time.perf_counter()
        examples = label_window_examples(TwoStage(_provisional_bundle(hist_ds, hist_spec, tt_hist)), hist_ds,
                                         labels, cfg, rng)
        rankers = train_rankers(examples, spec, cfg, progress, ray_fit)
        done("rankers", t0)

        t0 = time.perf_counter()
        if child:
            tt = child.result()
        else:
            tt = fit_two_tower(ds, spec, cfg.two_tower, progress,
                               tt_hist if cfg.two_tower.finetune_epochs > 0 else None, ray_fit)
        done("two_tower", t0)
    finally:
        if child:
            child.close()

    t0 = time.perf_counter()
    matrix = InteractionMatrix.from_dataset(ds)
    als = ALS(cfg.als).fit(matrix, progress)
    done("als", t0)

    t0 = time.perf_counter()
    bundle = _provisional_bundle(ds, spec, tt)
    bundle.rankers = rankers
    bundle.popularity = matrix.item_counts().astype(np.float32)
    bundle.als_user_ids = matrix.users.to_list()
    bundle.als_user_factors, bundle.als_item_factors = als.user_factors, als.item_factors
    bundle.config = cfg.to_dict()
    done("features_and_bundle", t0)
    steps.close()
    timings["ranker_examples"] = len(examples)
    return bundle, timings
