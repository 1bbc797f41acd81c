"""Feature service benchmark: online read latency over loopback gRPC, and event-to-online freshness.

1. Builds a synthetic dataset (default 10k users, 100k items), writes the offline tables with the shared
   feature definition, and materializes the serving views through Feast (packed vectors + history; --all-views
   also the per-feature views) into SQLite (default) or a private Redis (--online-store redis).
2. Starts `recsys features serve` as its own process and measures, from one client over loopback gRPC,
   GetUserFeatures (one random user) and GetItemFeatures (--batch random items, default 300); for comparison,
   the Feast SDK's `get_online_features` for the same batch in-process.
3. Freshness (unless --no-stream): starts a private Kafka broker, produces events at --rate events/s for
   --seconds from a separate process, runs the streaming consumer, and reports for every event the time from
   its production (timestamp_ms) to the end of the Feast write that made it visible online; then Kafka's own
   consumer perf tool reads the same topic (kafka_perf.py) and `ratio_to_kafka_consumer_perf` is the events/s
   our consumer's CPU per event allows on one core over the tool's records/s.

Servers started here (feature server, Kafka, Redis) are stopped by PID on exit. Prints figures, then one
JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from kafka_perf import consumer_perf, ratio

from recsys.common import children
from recsys.common.ports import free_port

REPO = Path(__file__).resolve().parents[1]


class _Script:
    """A server from deploy/local (kafka.sh / redis.sh) on free ports, stopped on exit."""

    def __init__(self, script: str, args: list[str]) -> None:
        self.script, self.args = str(REPO / "deploy/local" / script), args

    def __enter__(self) -> _Script:
        done = subprocess.run([self.script, "start", *self.args], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{self.script} start failed:\n{done.stdout}\n{done.stderr}")
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([self.script, "stop", *self.args], capture_output=True, timeout=120)


def _percentiles(samples_s: list[float]) -> tuple[float, float, float]:
    ms = np.asarray(samples_s) * 1000.0
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), float(ms.max())


def _prepare(args, env: dict[str, str]) -> tuple[list[str], list[str], float]:
    """Dataset -> offline tables -> materialized serving views; returns user ids, item ids, seconds."""
    os.environ.update(env)
    from recsys.features import materialize
    from recsys.features.settings import FeatureSettings
    from recsys.training.data.synthetic import generate
    from recsys.training.features import write_offline_tables

    settings = FeatureSettings.from_env()
    t0 = time.perf_counter()
    ds = generate(n_interactions=args.interactions, n_users=args.users, n_items=args.items, seed=0)
    write_offline_tables(ds, settings.offline_dir)
    print(f"dataset and offline tables: {time.perf_counter() - t0:.1f}s "
          f"({args.users} users, {args.items} items, {args.interactions} interactions)")
    views = None if args.all_views else ["user_vector", "item_vector", "user_history"]
    report = materialize.materialize(settings, views)
    print(f"materialized {', '.join(sorted(report.modes))} in {report.seconds:.1f}s")
    users = [str(u) for u in ds.users["user_id"]]
    items = [str(i) for i in ds.items["item_id"]]
    return users, items, report.seconds


def _start_server(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """`recsys features serve` on a free port; returns the process and its address (from its log)."""
    proc = children.spawn(
        [sys.executable, "-m", "recsys.cli", "features", "serve", "--port", "0"],
        env={**os.environ, **env, "RECSYS_LOG_LEVEL": "INFO"}, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if '"serving"' in line:
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, json.loads(line)["address"]
    proc.kill()
    raise SystemExit("feature server did not start")


def _drain(stream) -> None:
    for _ in stream:
        pass


def _latency(address: str, users: list[str], items: list[str], args) -> dict:
    import grpc

    from recsys.common.clients import insecure_channel, wait_ready
    from recsys.v1 import features_pb2, features_pb2_grpc

    wait_ready(address, 60)
    rng = np.random.default_rng(1)
    out = {}
    with insecure_channel(address) as ch:
        stub = features_pb2_grpc.FeatureServiceStub(ch)
        user_req = [features_pb2.GetUserFeaturesRequest(user_id=users[i])
                    for i in rng.integers(len(users), size=args.calls + 200)]
        item_req = [features_pb2.GetItemFeaturesRequest(item_ids=[items[i] for i in rng.choice(len(items), args.batch,
                                                                                                  replace=False)])
                    for _ in range(args.calls + 100)]
        for name, call, reqs, warm in (("user", stub.GetUserFeatures, user_req, 200),
                                       ("items", stub.GetItemFeatures, item_req, 100)):
            lat = []
            for j, req in enumerate(reqs):
                t0 = time.perf_counter()
                resp = call(req, timeout=5)
                if j >= warm:
                    lat.append(time.perf_counter() - t0)
            assert len(resp.features.entity_ids) == len(getattr(req, "item_ids", [None])) or name == "user"
            p50, p99, worst = _percentiles(lat)
            out.update({f"{name}_p50_ms": round(p50, 3), f"{name}_p99_ms": round(p99, 3),
                        f"{name}_max_ms": round(worst, 3)})
            width = len(resp.features.names)
            print(f"{name:5s}: p50 {p50:.2f} ms  p99 {p99:.2f} ms  max {worst:.1f} ms  ({len(lat)} calls, "
                  f"{width} features{'' if name == 'user' else f' x {args.batch} items'})")
        try:
            stub.GetItemFeatures(features_pb2.GetItemFeaturesRequest(), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    return out


def _sdk_baseline(items: list[str], args) -> dict:
    """The Feast SDK's get_online_features for the same batch size, in-process (no gRPC)."""
    from recsys.features.settings import FeatureSettings
    from recsys.features.store import open_store

    fs = open_store(FeatureSettings.from_env())
    rng = np.random.default_rng(2)
    lat = []
    for j in range(min(args.calls, 300) + 20):
        rows = [{"item_id": items[i]} for i in rng.choice(len(items), args.batch, replace=False)]
        t0 = time.perf_counter()
        fs.get_online_features(features=["item_vector:values"], entity_rows=rows).to_dict()
        if j >= 20:
            lat.append(time.perf_counter() - t0)
    p50, p99, _ = _percentiles(lat)
    print(f"Feast SDK get_online_features ({args.batch} items, in-process): p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    return {"sdk_items_p50_ms": round(p50, 3), "sdk_items_p99_ms": round(p99, 3)}


def _produce(bootstrap: str, topic: str, rate: int, seconds: float, n_users: int, n_items: int) -> None:
    """Producer process: Zipf-popular items, uniform users, `rate` events/s in 10 ms ticks."""
    from recsys.common import kafka as rk
    from recsys.v1 import events_pb2

    rng = np.random.default_rng(3)
    kinds = [events_pb2.EVENT_TYPE_CLICK] * 6 + [events_pb2.EVENT_TYPE_VIEW] * 3 + [events_pb2.EVENT_TYPE_PURCHASE]
    producer = rk.make_producer(bootstrap, linger_ms=2)
    tick, sent, start = 0.01, 0, time.perf_counter()
    run = uuid.uuid4().hex[:6]
    width = len(str(n_items - 1))  # synthetic item ids are zero-padded
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(rate * elapsed) - sent
        for _ in range(due):
            item = min(int(rng.zipf(1.3)), n_items) - 1
            ev = events_pb2.Event(event_id=f"{run}-{sent}", type=kinds[sent % len(kinds)],
                                  user_id=f"bench-u{int(rng.integers(n_users))}", item_id=f"i{item:0{width}d}",
                                  timestamp_ms=int(time.time() * 1000))
            rk.publish(producer, topic, ev)
            sent += 1
        time.sleep(tick)
    producer.flush(timeout=60)
    producer.close(timeout=10)
    print(f"PRODUCED {sent}", flush=True)


def _freshness(args, env: dict[str, str], tmp: Path) -> dict:
    from recsys.common import kafka as rk
    from recsys.common.heap import freeze_heap
    from recsys.features.consumer import EventConsumer
    from recsys.features.settings import FeatureSettings
    from recsys.features.store import open_store
    from recsys.features.streaming import StreamUpdater

    port, cport = free_port(), free_port()
    kafka_args = ["--port", str(port), "--controller-port", str(cport), "--state-dir", str(tmp / "kafka"),
                  "--watch-pid", str(os.getpid())]
    with _Script("kafka.sh", kafka_args):
        bootstrap = f"127.0.0.1:{port}"
        topic, dlq = f"bench-events-{uuid.uuid4().hex[:6]}", f"bench-dlq-{uuid.uuid4().hex[:6]}"
        rk.ensure_topics({topic: 3, dlq: 1}, bootstrap)
        cfg = FeatureSettings.from_env()
        updater = StreamUpdater(open_store(cfg), recent_keep=cfg.recent_keep, dedup_keep=cfg.dedup_keep)
        consumer = EventConsumer(updater, bootstrap=bootstrap, topic=topic, group_id=f"bench-{uuid.uuid4().hex[:6]}",
                                 dlq_topic=dlq, record_lags=True)
        consumer.run(max_records=1, idle_timeout_s=3)  # join the group before the clock starts
        freeze_heap()
        producer = children.spawn(
            [sys.executable, __file__, "--role", "producer", "--bootstrap", bootstrap, "--topic", topic,
             "--rate", str(args.rate), "--seconds", str(args.seconds), "--users", str(args.users),
             "--items", str(args.items)],
            stdout=subprocess.PIPE, text=True, env={**os.environ, **env},
        )
        try:
            started, cpu = time.perf_counter(), time.process_time()
            total = consumer.run(idle_timeout_s=5)
            elapsed = time.perf_counter() - started - 5
            cpu = time.process_time() - cpu
            out, _ = producer.communicate(timeout=120)
        finally:
            if producer.poll() is None:
                producer.kill()
            consumer.close()
        produced = int(out.split()[-1]) if out.strip() else -1
        perf = consumer_perf(bootstrap, [topic], produced)  # Kafka's own consumer on the same records
    stats = consumer.stats
    p50, p99, worst = _percentiles(stats.lags_s)
    rate = stats.applied / max(elapsed, 1e-9)
    cpu_us = cpu / max(total, 1) * 1e6
    per_core = 1e6 / cpu_us if cpu_us > 0 else 0.0  # what one core would sustain at this CPU per event
    to_perf = ratio(per_core, perf)
    print(f"freshness at {args.rate} events/s for {args.seconds:.0f}s: produced {produced}, consumed {total}, "
          f"applied {stats.applied} in {stats.batches} batches ({rate:.0f}/s); event-to-online p50 {p50:.0f} ms, "
          f"p99 {p99:.0f} ms, max {worst:.0f} ms; consumer CPU {cpu_us:.0f} us/event = {per_core:.0f} events/s "
          f"per core; Kafka's consumer perf tool on the same topic {perf['records_per_s']} records/s "
          f"({perf['note']}; ours per core / it: {to_perf})")
    return {"freshness_p50_ms": round(p50, 1), "freshness_p99_ms": round(p99, 1), "freshness_max_ms": round(worst, 1),
            "events_produced": produced, "events_applied": stats.applied, "stream_rate": args.rate,
            "stream_batches": stats.batches, "consumer_cpu_us_per_event": round(cpu_us, 1),
            "consumer_events_per_cpu_s": round(per_core, 1),
            "kafka_consumer_perf_records_per_s": perf["records_per_s"],
            "ratio_to_kafka_consumer_perf": to_perf}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=300, help="items per GetItemFeatures")
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per RPC")
    parser.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--all-views", action="store_true", help="also materialize the per-feature views")
    parser.add_argument("--no-stream", action="store_true", help="skip the Kafka freshness part")
    parser.add_argument("--rate", type=int, default=5000, help="events/s produced for the freshness part")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of production")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "producer":
        _produce(args.bootstrap, args.topic, args.rate, args.seconds, args.users, args.items)
        return 0

    with tempfile.TemporaryDirectory(prefix="recsys-bench-features-") as tmp_name:
        tmp = Path(tmp_name)
        env = {"RECSYS_VAR_DIR": str(tmp / "var"), "RECSYS_FEATURES_OFFLINE_DIR": str(tmp / "var" / "features"),
               "RECSYS_FEAST_DIR": str(tmp / "var" / "feast"), "RECSYS_ONLINE_STORE": args.online_store,
               "RECSYS_FEAST_PROJECT": "bench", "RECSYS_FEATURES_MAX_ITEMS": str(max(1000, args.batch))}
        redis = None
        if args.online_store == "redis":
            port = free_port()
            redis = _Script("redis.sh", ["--port", str(port), "--state-dir", str(tmp / "redis")]).__enter__()
            env["RECSYS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        server = None
        try:
            users, items, mat_s = _prepare(args, env)
            result = {"users": args.users, "items": args.items, "batch": args.batch, "online_store": args.online_store,
                      "materialize_s": round(mat_s, 1)}
            server, address = _start_server(env)
            result.update(_latency(address, users, items, args))
            result.update(_sdk_baseline(items, args))
            if not args.no_stream:
                result.update(_freshness(args, env, tmp))
            result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        finally:
            if server is not None and server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
            if redis is not None:
                redis.__exit__(None, None, None)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
