"""Chaos under load: faults injected into the running stack while closed-loop traffic runs.

The stack (every service its own process, a private Kafka, Milvus Lite inside the candidate service) runs
under continuous Recommend load plus click events through EventService. In turn: each service is killed
(SIGKILL; the supervisor restarts it), Milvus Lite's server process is killed, Kafka is stopped and started
again. For each fault it records failed valid requests, the degraded share, and the recovery time: from the fault
until what it broke works again, a fully ranked, non-degraded Recommend (ranking, candidates, features, Milvus) or
OnlineMetrics answering (monitoring), counted only once the outage has shown (a killed process's helpers may answer
for a moment); for Kafka, from the broker's restart until EventService accepts a click again. Ranking runs
--ranking-instances instances (default 2, each its own Ray; the gateway balances over them): the fault kills one,
so the service's recovery is how long ranked answers stop, and `instance_restart_s` is how long the killed
instance took to serve again (a cold start of Ray and Serve). At the end, every
click that EventService accepted must have reached Kafka: `events_lost` compares the accepted event ids with those
read back from the events topic.

Last line: one JSON object with `errors`, `degraded_rate`, `max_recovery_s`, `events_lost` and per-fault detail.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc

from recsys.client import RecsysClient
from recsys.common import kafka
from recsys.stack.broker import local_broker
from recsys.stack.demo import DemoOptions, prepare
from recsys.stack.local import StackConfig, ranking_ready, start_stack
from recsys.training.data.loaders import load_dataset
from recsys.v1 import events_pb2


class Load:
    """Recommend + click traffic until stopped (bounded by max_s); counts outcomes per phase."""

    def __init__(self, gateway: str, users: list[str], max_s: float) -> None:
        self.gateway, self.users, self.max_s = gateway, users, max_s
        self.phase = "warmup"
        self.stats: dict[str, dict[str, int]] = {}
        self.accepted: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, key: str) -> None:
        phase = self.stats.setdefault(self.phase, {"ok": 0, "errors": 0, "degraded": 0})
        phase[key] = phase.get(key, 0) + 1

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with RecsysClient(self.gateway, timeout_s=2.0) as client:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                user = self.users[i % len(self.users)]
                i += 1
                try:
                    recs = client.recommend(user, 10)
                    self._count("ok")
                    if recs.degraded:
                        self._count("degraded")
                        for reason in recs.degraded_reasons:  # "hop: status", e.g. "rank: UNAVAILABLE"
                            self._count(f"degraded by {reason.split(':')[0]}")
                except grpc.RpcError:
                    self._count("errors")
                    continue
                if i % 5 == 0 and recs.items:
                    event = events_pb2.Event(event_id=uuid.uuid4().hex, type=events_pb2.EVENT_TYPE_CLICK,
                                             user_id=user, item_id=recs.items[0].item_id,
                                             request_id=recs.request_id, timestamp_ms=int(time.time() * 1000))
                    try:
                        client.publish([event], timeout_s=2.0)
                        self.accepted.add(event.event_id)
                    except grpc.RpcError:
                        pass  # refused (UNAVAILABLE while Kafka is down): not accepted, so not lost
                time.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _poll(probe, timeout_s: float) -> float:
    """Seconds until `probe()` first returns True (polled every 100 ms); inf when it never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if _ok(probe):
            return time.monotonic() - started
        time.sleep(0.1)
    return float("inf")


def _ok(probe) -> bool:
    try:
        return bool(probe())
    except grpc.RpcError:
        return False


def _downtime(probe, started: float, show_s: float = 10.0, timeout_s: float = 180.0) -> float:
    """Seconds from `started` (the fault) until `probe` passes again after it first failed: the outage as
    clients see it. A killed process's helpers can answer for a moment before they notice, so the clock
    stops only after the fault has shown; a fault that never shows within `show_s` cost 0 s."""
    deadline = started + show_s
    while _ok(probe):
        if time.monotonic() > deadline:
            return 0.0
        time.sleep(0.05)
    if _poll(probe, timeout_s) == float("inf"):
        return float("inf")
    return time.monotonic() - started


class Probes:
    """What tells a fault is over, each a callable returning True once it is; their clients close together."""

    def __init__(self, gateway: str, monitoring: str) -> None:
        self.gateway, self.monitoring = gateway, monitoring
        self._clients: list[RecsysClient] = []

    def _client(self, **kwargs) -> RecsysClient:
        self._clients.append(RecsysClient(self.gateway, timeout_s=2.0, **kwargs))
        return self._clients[-1]

    def ranked_answer(self, user: str):
        """A fully ranked, non-degraded Recommend (what a killed feature/candidate/ranking service breaks)."""
        client = self._client()

        def probe() -> bool:
            recs = client.recommend(user, 10)
            return not recs.degraded and bool(recs.model)

        return probe

    def monitoring_answers(self):
        """The monitoring service answers OnlineMetrics again."""
        client = self._client(monitoring=self.monitoring)
        return lambda: client.online_metrics(timeout_s=1.0) is not None

    def event_accepted(self, user: str):
        """EventService accepts a click again (it answers only once Kafka acknowledged it)."""
        client = self._client()

        def probe() -> bool:
            event = events_pb2.Event(event_id=f"probe-{uuid.uuid4().hex}", type=events_pb2.EVENT_TYPE_CLICK,
                                     user_id=user, item_id="probe", timestamp_ms=int(time.time() * 1000))
            return client.publish([event], timeout_s=2.0) == 1

        return probe

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


def milvus_lite_pids(candidates_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(candidates_pid), "-f", "milvus_lite"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def read_event_ids(bootstrap: str, topic: str) -> set[str]:
    consumer = kafka.make_consumer(f"chaos-audit-{uuid.uuid4().hex[:6]}", [topic], bootstrap)
    seen: set[str] = set()
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < 5:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                idle_since = time.monotonic()
                for record in records:
                    seen.add(kafka.decode(events_pb2.Event, record.value).event_id)
    finally:
        consumer.close()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="state and service logs here, kept afterwards")
    parser.add_argument("--ranking-instances", type=int, default=2, help="ranking instances (one is killed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-chaos-") as tmp:
        var = args.keep or Path(tmp)
        with local_broker(var / "kafka") as broker:
            cfg = StackConfig.default(var, broker.bootstrap, fixed_ports=False,
                                      ranking_instances=args.ranking_instances)
            data_dir, _ = prepare(DemoOptions(var_dir=var, kafka_bootstrap=broker.bootstrap, users=1000, items=800,
                                              interactions=40_000), cfg)
            users = list(load_dataset(data_dir).interactions["user_id"].astype(str).unique())
            sup = start_stack(cfg)
            gateway = cfg.address("gateway")
            load = Load(gateway, users, max_s=900)
            probes = Probes(gateway, cfg.address("monitoring"))
            faults: dict[str, dict] = {}
            try:
                _poll(probes.ranked_answer(users[0]), 180)
                load.start()
                time.sleep(3)
                # Recovery is timed from the moment the fault ends: a killed process is dead at once (the
                # supervisor restarts it); Kafka ends its outage when `kafka.sh start` returns.
                for name in ("ranking", "candidates", "features", "monitoring", "milvus", "kafka"):
                    load.phase = name
                    probe = probes.ranked_answer(users[1])
                    started = time.monotonic()
                    if name == "milvus":
                        for pid in milvus_lite_pids(sup.children["candidates"].proc.pid):
                            os.kill(pid, signal.SIGKILL)
                    elif name == "kafka":
                        broker.run("stop")
                        time.sleep(5)  # a 5 s outage under load
                        broker.run("start")
                        started = time.monotonic()  # the outage ends here; events must flow again
                    else:
                        sup.kill(name)
                        if name == "monitoring":
                            probe = probes.monitoring_answers()
                    if name == "kafka":
                        recovery = _poll(probes.event_accepted(users[1]), 180)
                    else:
                        recovery = _downtime(probe, started)
                    faults[name] = {"recovery_s": round(recovery, 1), **load.stats.get(name, {})}
                    if name == "ranking":
                        instance = cfg.address("ranking")
                        restart = _downtime(lambda a=instance: ranking_ready(a), started)  # once its proxy is gone
                        faults[name]["instance_restart_s"] = round(restart, 1)
                        faults[name]["instances"] = len(cfg.instances("ranking"))
                    print(f"{name:<11} {faults[name]}", flush=True)
                    time.sleep(2)  # load on the recovered stack before the next fault
                load.phase = "after"
                time.sleep(3)
            finally:
                probes.close()
                load.stop()
                sup.stop()
            delivered = read_event_ids(broker.bootstrap, "recsys.events")
    lost = len(load.accepted - delivered)
    total = {k: sum(s.get(k, 0) for s in load.stats.values()) for k in ("ok", "errors", "degraded")}
    requests = total["ok"] + total["errors"]
    print(json.dumps({
        "errors": total["errors"], "requests": requests,
        "degraded_rate": round(total["degraded"] / max(1, total["ok"]), 4),
        "max_recovery_s": max(f["recovery_s"] for f in faults.values()),
        "events_accepted": len(load.accepted), "events_lost": lost, "faults": faults,
    }))


if __name__ == "__main__":
    main()
