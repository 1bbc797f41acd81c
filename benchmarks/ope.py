"""OPE benchmark: do the IPS / SNIPS / DR intervals of a target ranker's CTR cover what it really earns online?

World: a synthetic ground truth (`recsys.training.data.synthetic.generate`, 2,000 users x 1,000 items); clicks
as the stack's traffic simulator draws them: `click_probability(truth, user, item) / sqrt(1 + position)`.
A request is a uniform user and 100 candidates drawn by popularity without replacement.

Per repetition (the ground truth is shared, everything else is drawn anew):

1. Log: the champion ranks the candidates by the true click logit + N(0, `--champion-noise`), serves k = 10 with
   `epsilon=0.1,pool=20` (`recsys.model.exploration`) and logs the pool prefix (30 items), the shown ranks
   and the clicks of `--requests` requests.
2. Target: a better ranker (logit + N(0, `--target-noise`)) re-ranks each logged pool and serves its top 10.
3. Estimates of the target's CTR (clicks per slot) by IPS, SNIPS and DR (reward model: the target's own noisy
   logit through a sigmoid, deliberately uncalibrated), with theta known (1 / sqrt(1 + j)) and fitted on the
   log with `fit_position_bias`. The fit keys impressions by their logged *pool rank*, not the item: an
   explore rank lands on a uniformly random explore slot, so its position is independent of its relevance
   (greedy ranks only ever sit at their own position and drop out of the fit). Keyed by item id, the fit
   would also learn from greedy impressions, whose position follows the champion's personalised ranking
   (the `eta_item_key` diagnostic shows that confounding). The per-request intervals take theta as exact;
   `fitted+` adds the fit's error by the delta method: |d ctr / d eta| (central difference) times the standard
   error of eta (`--bootstrap` Poisson-bootstrap refits over requests), through `estimators.widen`.
4. Online: the target serves `--online` fresh requests (new users, candidates and noise) through the same
   click model: its measured CTR, and its exact expected CTR on those requests (click probabilities, no
   click noise). Also exact: the target's CTR on the logged requests (what the estimators estimate, used for
   the bias column), and the champion's CTR with and without exploration (the cost of exploring).

Coverage = share of repetitions whose 95% interval holds the online measured CTR (and, separately, the online
expected CTR, and the population CTR: the mean online expected CTR over all repetitions). Prints a table, then one
JSON object on the last line: `coverage_ips` / `coverage_snips` / `coverage_dr` are vs online with theta fitted
and its error propagated (`fitted+`); `_plugin` the plug-in intervals; `_known_theta` with the true theta.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from recsys.model.exploration import ExplorationPolicy
from recsys.training.data.propensity import PositionBias, fit_position_bias
from recsys.training.data.synthetic import click_probability, generate
from recsys.training.ope.estimators import LoggedSlates, estimate, expected_ctr, expected_ctr_logging, widen

K = 10
CANDIDATES = 100
POLICY = "epsilon=0.1,pool=20"
ESTIMATORS = ("ips", "snips", "dr")
THETAS = ("known", "fitted", "fitted+")  # fitted: plug-in interval; fitted+: with theta's error propagated
ETA_STEP = 0.02  # finite-difference step of d ctr / d eta


class World:
    """The ground truth as dense arrays: click probability and logit of every (user, item), item popularity."""

    def __init__(self, users: int, items: int, seed: int) -> None:
        truth = generate(n_interactions=20 * users, n_users=users, n_items=items, seed=seed).meta["truth"]
        p = click_probability(truth, truth.user_ids[:, None], truth.item_ids[None, :]).astype(np.float64)
        self.p = p.astype(np.float32)
        self.logit = (np.log(p) - np.log1p(-p)).astype(np.float32)
        self.inv_pop = (1.0 / np.exp(truth.item_log_popularity.astype(np.float64))).astype(np.float32)

    def requests(self, rng: np.random.Generator, n: int, pool: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        """n requests ranked by the champion: (users [n], the champion's top `pool` items [n, pool], best first)."""
        users = rng.integers(self.p.shape[0], size=n)
        # popularity-weighted sampling without replacement: the smallest Exp(1) / popularity keys
        keys = rng.standard_exponential((n, len(self.inv_pop)), dtype=np.float32) * self.inv_pop
        cands = np.argpartition(keys, CANDIDATES, axis=1)[:, :CANDIDATES]
        scores = self.logit[users[:, None], cands] + noise * rng.standard_normal(cands.shape, dtype=np.float32)
        order = np.argsort(-scores, axis=1)[:, :pool]
        return users, np.take_along_axis(cands, order, axis=1)


def target_slates(world: World, rng: np.random.Generator, users: np.ndarray, pool: np.ndarray, noise: float):
    """The target ranker's top K of each pool (pool indexes) and its noisy logits over the pool."""
    scores = world.logit[users[:, None], pool] + noise * rng.standard_normal(pool.shape, dtype=np.float32)
    return np.argsort(-scores, axis=1)[:, :K], scores


def fit_eta(shown: np.ndarray, clicks: np.ndarray, pool: int, weights: np.ndarray | None = None) -> PositionBias:
    """`fit_position_bias` with impressions keyed by pool rank, aggregated into (rank, position) cells (the same
    likelihood, 300 rows instead of R K); `weights` per request (a bootstrap's)."""
    cell = (shown * K + np.arange(K)).ravel()
    w = np.ones(shown.shape) if weights is None else np.broadcast_to(weights[:, None], shown.shape)
    n = np.bincount(cell, weights=w.ravel(), minlength=pool * K)
    c = np.bincount(cell, weights=(clicks * w).ravel(), minlength=pool * K)
    idx = np.flatnonzero(n > 0)
    return fit_position_bias(idx // K, idx % K, c[idx], shown=n[idx])


def one_run(world: World, rng: np.random.Generator, args: argparse.Namespace) -> dict:
    policy = ExplorationPolicy.parse(POLICY)
    pool_size = policy.pool_size(CANDIDATES, K)
    marginals = policy.marginals(pool_size, K)  # recomputed from the logged prefix length, as OPE would
    theta = 1.0 / np.sqrt(1.0 + np.arange(K))

    # 1. the champion's exploring log
    users, pool = world.requests(rng, args.requests, pool_size, args.champion_noise)
    relevance = world.p[users[:, None], pool].astype(np.float64)  # click probability at the top, [R, pool]
    shown, _ = policy.sample_many(CANDIDATES, K, rng, args.requests)
    clicks = (rng.random(shown.shape) < theta * np.take_along_axis(relevance, shown, axis=1)).astype(np.float64)

    # 2. the target re-ranks each logged pool
    target, scores = target_slates(world, rng, users, pool, args.target_noise)
    reward = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))

    # 3. estimates, theta known and fitted (impressions keyed by pool rank; see the module docstring)
    fitted = fit_eta(shown, clicks, pool_size)
    positions = np.broadcast_to(np.arange(K), shown.shape)
    by_item = fit_position_bias(np.take_along_axis(pool, shown, axis=1).ravel(), positions.ravel(), clicks.ravel())
    boot = [fit_eta(shown, clicks, pool_size, rng.poisson(1.0, args.requests)).eta for _ in range(args.bootstrap)]
    se_eta = float(np.std(boot, ddof=1)) if args.bootstrap > 1 else 0.0
    out: dict = {"eta": fitted.eta, "eta_se": se_eta, "eta_item_key": by_item.eta}

    def run(th: np.ndarray) -> dict:
        return estimate(LoggedSlates(marginals, shown, clicks, th), target, reward=reward)

    def theta_of(eta: float) -> np.ndarray:
        return PositionBias(eta, fitted.floor).propensity(np.arange(K))

    known, plug_in = run(theta), run(theta_of(fitted.eta))
    up, down = run(theta_of(fitted.eta + ETA_STEP)), run(theta_of(fitted.eta - ETA_STEP))
    out["known"] = {e: known[e] for e in ESTIMATORS}
    out["fitted"] = {e: plug_in[e] for e in ESTIMATORS}
    out["fitted+"] = {
        e: widen(plug_in[e], abs(up[e].ctr - down[e].ctr) / (2.0 * ETA_STEP) * se_eta) for e in ESTIMATORS
    }

    # 4. online: the target on fresh requests, measured and exact
    users_on, pool_on = world.requests(rng, args.online, pool_size, args.champion_noise)
    target_on, _ = target_slates(world, rng, users_on, pool_on, args.target_noise)
    rel_on = world.p[users_on[:, None], pool_on].astype(np.float64)
    p_on = theta * np.take_along_axis(rel_on, target_on, axis=1)
    out["online"] = float((rng.random(p_on.shape) < p_on).mean())
    out["online_expected"] = float(p_on.mean())
    out["logged_expected"] = expected_ctr(relevance, theta, target)
    out["champion_exploring"] = expected_ctr_logging(relevance, theta, marginals)
    out["champion_greedy"] = expected_ctr(relevance, theta, np.broadcast_to(np.arange(K), target.shape))
    return out


def summarise(runs: list[dict]) -> tuple[list[str], dict]:
    """Table lines and the per (theta, estimator) figures."""
    online = np.array([r["online"] for r in runs])
    online_exp = np.array([r["online_expected"] for r in runs])
    population = online_exp.mean()  # the target's CTR over all repetitions' fresh requests (near noiseless)
    logged_exp = np.array([r["logged_expected"] for r in runs])
    header = (
        f"{'estimator':<10}{'theta':<8}{'mean est':>10}{'online':>10}{'bias':>10}{'bias se':>9}"
        f"{'CI width':>10}{'cov online':>12}{'cov expect':>12}{'cov pop':>9}{'support':>9}{'ess':>8}"
    )
    lines, figures = [header, "-" * len(header)], {}
    for th in THETAS:
        for e in ESTIMATORS:
            ests = [r[th][e] for r in runs]
            ctr = np.array([x.ctr for x in ests])
            low, high = np.array([x.low for x in ests]), np.array([x.high for x in ests])
            bias = ctr - logged_exp
            row = {
                "mean": float(ctr.mean()),
                "bias": float(bias.mean()),
                "bias_se": float(bias.std(ddof=1) / math.sqrt(len(runs))) if len(runs) > 1 else math.nan,
                "width": float((high - low).mean()),
                "coverage_online": float(((low <= online) & (online <= high)).mean()),
                "coverage_expected": float(((low <= online_exp) & (online_exp <= high)).mean()),
                "coverage_population": float(((low <= population) & (population <= high)).mean()),
                "support": float(np.mean([x.support for x in ests])),
                "ess": float(np.mean([x.ess for x in ests])),
            }
            figures[(th, e)] = row
            lines.append(
                f"{e:<10}{th:<8}{row['mean']:>10.5f}{online.mean():>10.5f}{row['bias']:>+10.5f}{row['bias_se']:>9.5f}"
                f"{row['width']:>10.5f}{row['coverage_online']:>12.3f}{row['coverage_expected']:>12.3f}"
                f"{row['coverage_population']:>9.3f}{row['support']:>9.3f}{row['ess']:>8.0f}"
            )
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repetitions", type=int, default=100)
    ap.add_argument("--requests", type=int, default=20_000, help="logged requests per repetition")
    ap.add_argument("--online", type=int, default=None, help="online requests per repetition (default: --requests)")
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--items", type=int, default=1_000)
    ap.add_argument("--champion-noise", type=float, default=1.5, help="std of the champion's noise on the logit")
    ap.add_argument("--target-noise", type=float, default=0.75, help="std of the target's noise on the logit")
    ap.add_argument("--bootstrap", type=int, default=40, help="bootstrap refits of eta per repetition (its se)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10 repetitions of 5,000 requests")
    args = ap.parse_args(argv)
    if args.quick:
        args.repetitions, args.requests = 10, 5_000
    args.online = args.online or args.requests

    start = time.perf_counter()
    world = World(args.users, args.items, args.seed)
    runs = []
    for rep in range(args.repetitions):
        runs.append(one_run(world, np.random.default_rng([args.seed, rep]), args))
        if (rep + 1) % max(1, args.repetitions // 10) == 0:
            print(f"  {rep + 1}/{args.repetitions} repetitions, {time.perf_counter() - start:.0f}s", file=sys.stderr)
    wall = time.perf_counter() - start

    lines, fig = summarise(runs)
    eta = np.array([r["eta"] for r in runs])
    eta_item = np.array([r["eta_item_key"] for r in runs])
    exploring = float(np.mean([r["champion_exploring"] for r in runs]))
    greedy = float(np.mean([r["champion_greedy"] for r in runs]))
    print(
        f"OPE coverage: {args.repetitions} repetitions x {args.requests} logged requests (k={K}, {POLICY}), "
        f"online {args.online} requests each; {wall:.0f}s"
    )
    print(
        f"theta_j = (1+j)^-eta: true eta 0.5, fitted {eta.mean():.3f} +- {eta.std():.3f} (bootstrap se "
        f"{np.mean([r['eta_se'] for r in runs]):.3f}; keyed by item id instead of pool rank: "
        f"{eta_item.mean():.3f} +- {eta_item.std():.3f})"
    )
    print(
        f"target CTR: online measured {np.mean([r['online'] for r in runs]):.5f}, online expected "
        f"{np.mean([r['online_expected'] for r in runs]):.5f}, on the logged requests "
        f"{np.mean([r['logged_expected'] for r in runs]):.5f}"
    )
    print(
        f"champion CTR: greedy {greedy:.5f}, exploring {exploring:.5f} (cost {greedy - exploring:.5f}, "
        f"{(greedy - exploring) / greedy:.2%})"
    )
    print(
        "bias = estimate - exact target CTR on the logged requests (mean over repetitions, with its se); "
        "fitted = plug-in interval, fitted+ = theta's error added (delta method, bootstrap se of eta)"
    )
    print("\n".join(lines))

    # headline: theta fitted on the log, its error propagated into the interval ("fitted+"), vs the online CTR
    result: dict = {f"coverage_{e}": fig[("fitted+", e)]["coverage_online"] for e in ESTIMATORS}
    for th, suffix in (("fitted+", ""), ("fitted", "_plugin"), ("known", "_known_theta")):
        for e in ESTIMATORS:
            row = fig[(th, e)]
            if suffix:
                result[f"coverage_{e}{suffix}"] = row["coverage_online"]
            result[f"coverage_{e}{suffix}_expected"] = row["coverage_expected"]
            result[f"coverage_{e}{suffix}_population"] = row["coverage_population"]
            result[f"ci_width_{e}{suffix}"] = row["width"]
        for e in ESTIMATORS:
            result[f"bias_{e}{suffix}"] = fig[(th, e)]["bias"]
    result.update(
        repetitions=args.repetitions,
        requests_per_run=args.requests,
        online_requests_per_run=args.online,
        policy=POLICY,
        k=K,
        target_ctr_online=float(np.mean([r["online"] for r in runs])),
        target_ctr_expected=float(np.mean([r["online_expected"] for r in runs])),
        eta_fitted_mean=float(eta.mean()),
        eta_fitted_sd=float(eta.std()),
        eta_bootstrap_se_mean=float(np.mean([r["eta_se"] for r in runs])),
        eta_item_key_mean=float(eta_item.mean()),
        champion_ctr_greedy=greedy,
        champion_ctr_exploring=exploring,
        exploration_ctr_cost=greedy - exploring,
        exploration_ctr_cost_relative=(greedy - exploring) / greedy,
        wall_s=round(wall, 1),
    )
    print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
