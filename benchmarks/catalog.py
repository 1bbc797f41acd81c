"""Live-catalogue benchmark: freshness of new items, deletes under load, SimilarItems latency, and Recommend's p99
while a burst of item changes goes through, on a whole local stack (embedded defaults: Milvus Lite, Feast SQLite).

    .venv/bin/python benchmarks/catalog.py [--items 2000 --users 1500 --interactions 60000] [--burst 10000]

- freshness: from UpsertItems returning (one new item at a time) until (a) a Recommend from the gateway shows it
  (the FRESH slots) and (b) the candidate service finds it in Milvus (SimilarItems by its own vector: embedded by
  the item tower and upserted); `freshness_p99_s` is the p99 of the later of the two;
- deleted_served: client threads send Recommend while items (the most popular first) are deleted in batches; an
  answer to a request sent after a delete returned must not hold any item of it (counted, target 0);
- similar_p99_ms: SimilarItems over known items, against the Recommend budget (100 ms);
- recommend_p99_ratio_during_burst: Recommend's p99 while `--burst` item changes go through (UpsertItems calls
  of 500 from another process: new genres and years for the catalogue's items, cycling over them, so the
  catalogue keeps its size and the figure is the cost of the changes, not of a bigger index), over its p99 in the
  --seconds just before, under the same open-loop load (Poisson arrivals at --rate per second, latency counted
  from when each request was due); "during" is the --seconds from the burst's start. This is done --repeats times
  (3) and the latencies pooled: one burst's p99 rests on its ~6 slowest of ~600 answers, and on this machine the
  p99 of quiet 15 s windows alone moves between 55 and 96 ms. Then the same burst again
  under four closed-loop clients, which keep the 2 cores saturated (`..._closed_loop`): at saturation any extra
  work is queueing for every request, so that figure is the capacity the changes take, not their interference.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from recsys.client import RecsysClient
from recsys.common.clients import channel
from recsys.stack.broker import local_broker
from recsys.stack.cpu import cpu_seconds
from recsys.stack.demo import DemoOptions, prepare
from recsys.stack.local import StackConfig, start_stack
from recsys.training.data.loaders import load_dataset
from recsys.v1 import candidates_pb2, candidates_pb2_grpc, catalog_pb2


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Load:
    """Closed-loop Recommend clients until stopped; records (sent_at, latency_ms, item ids) per answer."""

    def __init__(self, gateway: str, users: list[str], threads: int = 4) -> None:
        self.gateway, self.users, self.threads = gateway, users, threads
        self.answers: list[tuple[float, float, frozenset[str]]] = []
        self.hops: list[tuple[float, dict[str, float]]] = []  # (sent_at, ms per gateway hop) per answer
        self.errors = 0
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with RecsysClient(self.gateway, timeout_s=2.0) as client:
            while not self._stop.is_set():
                user = self.users[int(rng.integers(len(self.users)))]
                sent = time.monotonic()
                try:
                    recs = client.recommend(user, 10)
                except grpc.RpcError:
                    self.errors += 1
                    continue
                self.answers.append((sent, (time.monotonic() - sent) * 1000, frozenset(i.item_id for i in recs.items)))
                self.hops.append((sent, dict(recs.timings_ms)))

    def __enter__(self) -> Load:
        for w in self._workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=10)

    def p99_since(self, since: float, until: float) -> float:
        return pct(self.latencies(since, until), 99)

    def latencies(self, since: float, until: float) -> list[float]:
        """Latency (ms) of every answer to a request sent in [since, until)."""
        return [ms for sent, ms, _ in self.answers if since <= sent < until]

    def hop_p99_since(self, since: float, until: float) -> dict[str, float]:
        """p99 of each hop the gateway timed, over the answers to requests sent in [since, until)."""
        window = [hops for sent, hops in self.hops if since <= sent < until]
        names = sorted({name for hops in window for name in hops})
        return {name: round(pct([h[name] for h in window if name in h], 99), 1) for name in names}


class OpenLoad(Load):
    """Open-loop Recommend traffic: Poisson arrivals at `rate` per second, whatever the answers' latency (as a
    product's users send them); each latency counts from the moment the request was due, so queueing shows."""

    def __init__(self, gateway: str, users: list[str], rate: float, workers: int = 16) -> None:
        super().__init__(gateway, users, threads=0)
        self.rate, self.workers = rate, workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="open-load")
        self._clients = [RecsysClient(gateway, timeout_s=2.0) for _ in range(workers)]
        self._free: queue.SimpleQueue[RecsysClient] = queue.SimpleQueue()
        for c in self._clients:
            self._free.put(c)
        self._workers = [threading.Thread(target=self._schedule, daemon=True)]

    def _schedule(self) -> None:
        rng = np.random.default_rng(11)
        due = time.monotonic()
        while not self._stop.is_set():
            due += rng.exponential(1.0 / self.rate)
            pause = due - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)
            self._pool.submit(self._one, due, self.users[int(rng.integers(len(self.users)))])

    def _one(self, due: float, user: str) -> None:
        client = self._free.get()
        try:
            recs = client.recommend(user, 10)
        except grpc.RpcError:
            self.errors += 1
            return
        finally:
            self._free.put(client)
        self.answers.append((due, (time.monotonic() - due) * 1000, frozenset(i.item_id for i in recs.items)))
        self.hops.append((due, dict(recs.timings_ms)))

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._pool.shutdown(wait=True)
        for c in self._clients:
            c.close()


def freshness(cfg: StackConfig, users: list[str], n: int) -> tuple[list[float], list[float]]:
    """Seconds from UpsertItems returning until the gateway serves the item / Milvus holds it, per new item."""
    served, indexed = [], []
    with RecsysClient(cfg.address("gateway"), timeout_s=2.0) as client, channel(cfg.address("candidates")) as ch:
        stub = candidates_pb2_grpc.CandidateServiceStub(ch)
        for i in range(n):
            item_id = f"fresh-{i}-{time.time_ns()}"
            client.upsert_items([catalog_pb2.Item(item_id=item_id, title=f"new {i}", genres=["Drama"])])
            start = time.monotonic()
            got_served = got_indexed = None
            while (got_served is None or got_indexed is None) and time.monotonic() - start < 30:
                if got_served is None and item_id in {x.item_id for x in client.recommend(users[i % len(users)]).items}:
                    got_served = time.monotonic() - start
                if got_indexed is None:
                    try:
                        stub.SimilarItems(candidates_pb2.SimilarItemsRequest(item_id=item_id, k=1), timeout=2)
                        got_indexed = time.monotonic() - start
                    except grpc.RpcError:
                        time.sleep(0.02)
            served.append(got_served if got_served is not None else float("inf"))
            indexed.append(got_indexed if got_indexed is not None else float("inf"))
            client.delete_items([item_id])  # one new item at a time: the next one is alone in its FRESH slot
    return served, indexed


def deletes_under_load(cfg: StackConfig, users: list[str], popular: list[str], batches: int = 5) -> tuple[int, int]:
    """(answers checked, answers holding an item deleted before they were asked for)."""
    deleted_at: dict[str, float] = {}
    with Load(cfg.address("gateway"), users) as load, RecsysClient(cfg.address("gateway"), timeout_s=5.0) as client:
        time.sleep(2)
        for b in range(batches):
            batch = popular[b * 4:(b + 1) * 4]
            client.delete_items(batch)
            returned = time.monotonic()
            deleted_at.update({item: returned for item in batch})
            time.sleep(1.5)
    violations = sum(1 for sent, _, items in load.answers
                     if any(deleted_at.get(item, float("inf")) <= sent for item in items))
    return len(load.answers), violations


def similar_latency(cfg: StackConfig, items: list[str], n: int = 300) -> list[float]:
    out = []
    with RecsysClient(cfg.address("gateway"), timeout_s=2.0) as client:
        for i in range(n):
            start = time.monotonic()
            client.similar(items[i % len(items)], 10)
            out.append((time.monotonic() - start) * 1000)
    return out


class CpuSampler:
    """CPU seconds of every service, sampled every second on a thread (where a burst's work lands, and when)."""

    def __init__(self, supervisor) -> None:
        self.supervisor = supervisor
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), cpu_seconds(self.supervisor)))
            self._stop.wait(1.0)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def print_per_second(self, origin: float, first: float, last: float) -> None:
        """CPU ms per second of each service, for the samples between origin+first and origin+last."""
        rows = [(t, cpu) for t, cpu in self.samples if first - 1 <= t - origin <= last]
        if len(rows) < 2:
            return
        names = sorted(rows[0][1])
        print("CPU ms per second by service (t = seconds from the burst's start):", flush=True)
        print("    t  " + " ".join(f"{n[:10]:>10}" for n in names), flush=True)
        for (t0, a), (t1, b) in zip(rows, rows[1:], strict=False):
            cells = " ".join(f"{(b.get(n, 0) - a.get(n, 0)) * 1000 / (t1 - t0):>10.0f}" for n in names)
            print(f"{t1 - origin:+5.1f}  {cells}", flush=True)


def _send_burst(gateway: str, batches: list[list[bytes]], go, sent) -> None:
    """In its own process, as a product app would be: UpsertItems per batch once `go` is set; puts the
    (monotonic start, end) of the sends on `sent`. The Items are parsed before waiting, so nothing but the calls
    runs during the burst."""
    items = [[catalog_pb2.Item.FromString(b) for b in batch] for batch in batches]
    with RecsysClient(gateway, timeout_s=30.0) as client:
        client.upsert_items(items[0][:1])  # connected (an item of the burst, so the catalogue is unchanged)
        sent.put(None)
        go.wait()
        start = time.monotonic()
        for batch in items:
            client.upsert_items(batch)
        sent.put((start, time.monotonic()))


@dataclass
class Burst:
    """One burst's measurement: Recommend latencies (ms) before and during it, its seconds, and the CPU seconds
    each process spent during it minus the same span before."""

    before: list[float]
    during: list[float]
    seconds: float
    extra_cpu: dict[str, float]

    @property
    def ratio(self) -> float:
        return pct(self.during, 99) / pct(self.before, 99)


def pooled(runs: list[Burst]) -> tuple[float, float]:
    """p99 before and during over the latencies of every run together."""
    return (pct([ms for r in runs for ms in r.before], 99), pct([ms for r in runs for ms in r.during], 99))


def burst(cfg: StackConfig, supervisor, users: list[str], items: list[str], genres: list[str], changes: int,
          seconds: float, rate: float = 0.0, round_: int = 0) -> Burst:
    """Recommend's latencies before and during a burst of `changes` item changes (round `round_`: other genres)
    under the same load: open-loop at `rate` requests/s, or (rate 0) four closed-loop clients, which
    keep the 2 cores saturated. The changes are sent by another process (the load's clients keep this one's
    interpreter to themselves, as the product app writing the catalogue is not the one asking for
    recommendations)."""
    rng = np.random.default_rng(7 + round_)
    batches = [[catalog_pb2.Item(item_id=items[i % len(items)], title=f"changed {i}",
                                 genres=list(rng.choice(genres, size=2, replace=False)),
                                 attributes={"year": str(1950 + i % 70)}).SerializeToString()
                for i in range(start, min(changes, start + 500))] for start in range(0, changes, 500)]
    ctx = multiprocessing.get_context("spawn")
    go, sent = ctx.Event(), ctx.Queue()
    sender = ctx.Process(target=_send_burst, args=(cfg.address("gateway"), batches, go, sent), daemon=True)
    sender.start()
    sent.get(timeout=120)  # the sender is ready
    load = OpenLoad(cfg.address("gateway"), users, rate) if rate > 0 else Load(cfg.address("gateway"), users)
    print(f"== burst of {changes} item changes under " + (f"open-loop load at {rate:g} Recommend/s" if rate > 0 else
          "closed-loop load (4 clients)"), flush=True)
    with load, CpuSampler(supervisor) as sampler:
        time.sleep(1)
        cpu0 = cpu_seconds(supervisor)
        before_start = time.monotonic()
        time.sleep(seconds)
        cpu1 = cpu_seconds(supervisor)
        go.set()
        burst_start, burst_end = sent.get(timeout=600)
        time.sleep(max(0.0, seconds - (time.monotonic() - burst_start)))  # the changes still flowing count
        during_end = time.monotonic()
        cpu2 = cpu_seconds(supervisor)
    sender.join(timeout=30)
    extra = {name: round((cpu2[name] - cpu1[name]) - (cpu1[name] - cpu0[name]), 2) for name in cpu2}
    print(f"hop p99 ms before: {load.hop_p99_since(before_start, burst_start)}\n"
          f"hop p99 ms during: {load.hop_p99_since(burst_start, during_end)}", flush=True)
    sampler.print_per_second(burst_start, -3, seconds)
    steps = np.arange(before_start, during_end, 1.0)
    print("Recommend p99 ms per second (the burst starts at 0): " + "  ".join(
        f"{t - burst_start:+.0f}:{load.p99_since(t, t + 1.0):.0f}" for t in steps), flush=True)
    return Burst(load.latencies(before_start, burst_start), load.latencies(burst_start, during_end),
                 burst_end - burst_start, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--interactions", type=int, default=60_000)
    parser.add_argument("--fresh", type=int, default=40, help="new items timed one by one")
    parser.add_argument("--burst", type=int, default=10_000, help="item changes in the burst")
    parser.add_argument("--seconds", type=float, default=15.0, help="load before and during the burst")
    parser.add_argument("--repeats", type=int, default=3, help="open-loop bursts, their latencies pooled")
    parser.add_argument("--rate", type=float, default=40.0, help="open-loop Recommend/s during the first burst "
                        "(~60%% of what load.py finds the local stack sustains on 2 cores); the second burst runs "
                        "under four closed-loop clients")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-catalog-") as tmp, local_broker(Path(tmp) / "kafka") as broker:
        var = Path(tmp)
        cfg = StackConfig.default(var, broker.bootstrap, fixed_ports=False, ranking_instances=1)
        opts = DemoOptions(var_dir=var, kafka_bootstrap=broker.bootstrap, users=args.users, items=args.items,
                           interactions=args.interactions)
        print("building the dataset, models, features and index ...", flush=True)
        data_dir, _ = prepare(opts, cfg)
        inter = load_dataset(data_dir).interactions
        users = list(inter["user_id"].astype(str).unique())
        popular = [str(i) for i in inter["item_id"].value_counts().index]
        supervisor = start_stack(cfg, watch=False)
        try:
            with RecsysClient(cfg.address("gateway"), timeout_s=2.0) as client:
                for u in users[:50]:
                    client.recommend(u, 10)  # warm-up
            served, indexed = freshness(cfg, users, args.fresh)
            later = [max(a, b) for a, b in zip(served, indexed, strict=True)]
            print(f"freshness p50/p99 s: served {pct(served, 50):.3f}/{pct(served, 99):.3f}  "
                  f"indexed {pct(indexed, 50):.3f}/{pct(indexed, 99):.3f}", flush=True)
            checked, violations = deletes_under_load(cfg, users, popular)
            print(f"deletes under load: {checked} answers checked, {violations} held a deleted item", flush=True)
            similar = similar_latency(cfg, popular[100:400])
            print(f"SimilarItems p50/p99 ms: {pct(similar, 50):.1f}/{pct(similar, 99):.1f}", flush=True)
            genres = sorted({g for gs in load_dataset(data_dir).items["genres"] for g in gs})
            runs: dict[str, list[Burst]] = {"open": [], "closed": []}
            for name, rate, repeats in (("open", args.rate, args.repeats), ("closed", 0.0, 1)):
                for r in range(repeats):
                    run = burst(cfg, supervisor, users, popular, genres, args.burst, args.seconds, rate, r)
                    runs[name].append(run)
                    print(f"Recommend p99 ms before / during a burst of {args.burst} item changes ({run.seconds:.1f} "
                          f"s): {pct(run.before, 99):.1f} / {pct(run.during, 99):.1f} (x{run.ratio:.2f}); extra CPU s "
                          f"by process: {run.extra_cpu}", flush=True)
        finally:
            supervisor.stop()
    open_before, open_during = pooled(runs["open"])
    closed = runs["closed"][0]
    print(f"open loop, {len(runs['open'])} bursts pooled: Recommend p99 ms before / during {open_before:.1f} / "
          f"{open_during:.1f} (x{open_during / open_before:.2f})", flush=True)
    print(json.dumps({
        "freshness_p99_s": round(pct(later, 99), 3), "freshness_served_p99_s": round(pct(served, 99), 3),
        "freshness_indexed_p99_s": round(pct(indexed, 99), 3), "fresh_items": len(later),
        "deleted_served": violations, "answers_checked": checked,
        "similar_p50_ms": round(pct(similar, 50), 2), "similar_p99_ms": round(pct(similar, 99), 2),
        # the machine-dependent latency against a same-run baseline: Recommend's p99 under load, just before the burst
        "similar_p99_ratio_to_recommend_p99": round(pct(similar, 99) / pct(closed.before, 99), 3),
        "recommend_rate_per_s": args.rate,
        # open loop: the latencies of --repeats bursts pooled (one burst's p99 rests on ~6 of ~600 answers)
        "recommend_p99_ms_before": round(open_before, 2),
        "recommend_p99_ms_during_burst": round(open_during, 2),
        "recommend_p99_ratio_during_burst": round(open_during / open_before, 3),
        "recommend_p99_ratio_per_burst": [round(r.ratio, 3) for r in runs["open"]],
        "recommend_p99_ms_before_closed_loop": round(pct(closed.before, 99), 2),
        "recommend_p99_ms_during_burst_closed_loop": round(pct(closed.during, 99), 2),
        "recommend_p99_ratio_during_burst_closed_loop": round(closed.ratio, 3),
        "burst_changes": args.burst, "bursts_open_loop": len(runs["open"]),
        "burst_s": [round(r.seconds, 2) for r in runs["open"]],
        "burst_s_closed_loop": round(closed.seconds, 2), "burst_extra_cpu_s": runs["open"][0].extra_cpu,
    }))


if __name__ == "__main__":
    main()
