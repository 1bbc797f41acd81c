"""Open-loop load: the gateway's Recommend driven by an outside generator (ghz) at fixed arrival rates.

    .venv/bin/python benchmarks/load.py [--items 2000 --users 1500 --interactions 60000] [--seconds 20]

A closed loop (each client waits for its answer) slows down with the system and hides queueing; production traffic
arrives whatever the latency. ghz (built from the Go module proxy by deploy/local/ghz.sh) sends `--async` at a fixed
`--rps`: a request starts on schedule even while earlier ones are unanswered.

1. The highest sustained rate: rates rise (x1.5 per step, then a bisection between the last good and the first
   bad one) while the stack answers at least 97% of the scheduled requests with under 1% degraded and no errors.
2. At 25/50/75/100% of that rate, `--seconds` each: p50/p99/p99.9 as ghz measured them (from each request's
   record), degraded share (the gateway's own `recsys_gateway_recommend_total{outcome}` counters, scraped before
   and after), errors, and the CPU milliseconds per request of every process of the stack (and of ghz itself):
   all the CPU they spent, and that minus what the same processes spend idle over as long (Ray's own processes,
   pollers and the monitoring windows burn CPU with no traffic; measured first, with no load, for --seconds).
   `cpu_ms_per_request` in the JSON is the latter: what a request adds.
3. The floor: the same generator at the 75% rate against an empty gRPC service on our bootstrap
   (`recsys.common.server.GrpcServer` with nothing registered: its grpc.health.v1 Check), in its own process.
   The ratio of the gateway's p99 to this floor is the figure that carries from machine to machine.

Loopback only, every run bounded by --seconds. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from recsys.common.ports import free_port
from recsys.stack.broker import local_broker
from recsys.stack.cpu import cpu_seconds
from recsys.stack.demo import DemoOptions, compile_ranker, prepare
from recsys.stack.local import StackConfig, start_stack
from recsys.training.data.loaders import load_dataset

ROOT = Path(__file__).resolve().parents[1]
RECOMMEND = "recsys.v1.RecommendService/Recommend"
PROTO = ROOT / "protos/recsys/v1/recommend.proto"
EMPTY_SERVER = """
import sys
from recsys.common.server import GrpcServer, ServerOptions
from recsys.v1 import recommend_pb2, recommend_pb2_grpc

class Empty(recommend_pb2_grpc.RecommendServiceServicer):
    def Recommend(self, request, context):
        return recommend_pb2.RecommendResponse()

register = lambda server: recommend_pb2_grpc.add_RecommendServiceServicer_to_server(Empty(), server)
options = ServerOptions.from_env(int(sys.argv[1]))
server = GrpcServer("empty", [register], ["recsys.v1.RecommendService"], options).start(metrics=False)
print("ready", flush=True)
server.wait()
"""


def ghz_binary() -> str:
    subprocess.run(["bash", str(ROOT / "deploy/local/ghz.sh"), "install"], check=True)
    return subprocess.run(["bash", str(ROOT / "deploy/local/ghz.sh"), "path"], check=True, capture_output=True,
                          text=True).stdout.strip()


def ghz(binary: str, target: str, call: str, data: Path, rps: float, seconds: float, connections: int = 4) -> dict:
    """One open-loop run; the report plus `latencies_ms` of answered requests, `status` counts, `cpu_s` of ghz."""
    cmd = [binary, "--insecure", "--proto", str(PROTO), "--import-paths", str(PROTO.parents[2]), "--call", call,
           "--async", "--rps", str(max(1, round(rps))),
           "--concurrency", "64", "--connections", str(connections), "--duration", f"{seconds}s",
           "--duration-stop", "wait", "--timeout", "2s", "--format", "json", "--data-file", str(data), target]
    before = os.times()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    out = done.stdout
    after = os.times()
    report = json.loads(out)
    details = report.get("details") or []
    report["latencies_ms"] = [d["latency"] / 1e6 for d in details if d.get("status") == "OK"]
    report["status"] = report.get("statusCodeDistribution") or {}
    report["cpu_s"] = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    report.pop("details", None)
    return report


def outcomes(metrics_address: str) -> dict[str, float]:
    """The gateway's Recommend answers so far by outcome (full / degraded, summed over variants) and its
    degraded answers by reason ("reason:<hop: status>")."""
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5).read().decode()
    out = {"full": 0.0, "degraded": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if family.name == "recsys_gateway_recommend":
                out[sample.labels["outcome"]] = out.get(sample.labels["outcome"], 0.0) + sample.value
            elif family.name == "recsys_gateway_degraded":
                out[f"reason:{sample.labels['reason']}"] = sample.value
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def idle_cpu(supervisor, seconds: float) -> dict[str, float]:
    """CPU seconds per second each process spends with no request coming in (Ray, pollers, drift windows)."""
    cpu0, start = cpu_seconds(supervisor), time.monotonic()
    time.sleep(seconds)
    cpu1, took = cpu_seconds(supervisor), time.monotonic() - start
    return {name: (cpu1[name] - cpu0.get(name, 0.0)) / took for name in cpu1}


def level(binary: str, cfg: StackConfig, supervisor, data: Path, rps: float, seconds: float,
          idle: dict[str, float] | None = None) -> dict:
    """One fixed-rate run on the gateway: latency percentiles, degraded share, errors, CPU ms per request (all
    the CPU the processes spent, and that minus what they spend idle over the same time)."""
    metrics = cfg.metrics_targets()["gateway"]
    counts0, cpu0, start = outcomes(metrics), cpu_seconds(supervisor), time.monotonic()
    report = ghz(binary, cfg.address("gateway"), RECOMMEND, data, rps, seconds)
    counts1, cpu1, took = outcomes(metrics), cpu_seconds(supervisor), time.monotonic() - start
    full = counts1["full"] - counts0["full"]
    degraded = counts1["degraded"] - counts0["degraded"]
    answered = len(report["latencies_ms"])
    scheduled = max(1, round(rps * seconds))
    errors = sum(n for code, n in report["status"].items() if code != "OK")
    reasons = {key[len("reason:"):]: int(n - counts0.get(key, 0.0)) for key, n in counts1.items()
               if key.startswith("reason:") and n > counts0.get(key, 0.0)}
    cpu = {name: round((cpu1[name] - cpu0.get(name, 0.0)) * 1000 / max(1, answered), 2) for name in cpu1}
    idle = idle or {}
    above_idle = {name: round(max(0.0, cpu1[name] - cpu0.get(name, 0.0) - idle.get(name, 0.0) * took) * 1000
                              / max(1, answered), 2) for name in cpu1}
    return {
        "target_rps": round(rps, 1), "answered_rps": round(answered / seconds, 1),
        "answered_share": round(answered / scheduled, 4),
        "p50_ms": round(pct(report["latencies_ms"], 50), 2), "p99_ms": round(pct(report["latencies_ms"], 99), 2),
        "p999_ms": round(pct(report["latencies_ms"], 99.9), 2),
        "degraded_share": round(degraded / max(1.0, full + degraded), 4), "degraded_reasons": reasons,
        "full_rps": round(full / seconds, 1), "errors": errors,
        "error_codes": {code: n for code, n in report["status"].items() if code != "OK"},
        "cpu_ms_per_request": cpu, "cpu_ms_per_request_total": round(sum(cpu.values()), 2),
        "cpu_ms_per_request_above_idle": above_idle,
        "cpu_ms_per_request_above_idle_total": round(sum(above_idle.values()), 2),
        "ghz_cpu_ms_per_request": round(report["cpu_s"] * 1000 / max(1, answered), 2),
    }


def sustained(run: dict) -> bool:
    return run["answered_share"] >= 0.97 and run["degraded_share"] < 0.01 and run["errors"] == 0


def find_max_rate(probe, start: float, steps: int) -> tuple[float, list[dict]]:
    """The highest rate `probe(rps)` sustains: x1.5 until one fails, then bisect `steps` times. A rate fails
    when two runs of it in a row do (one slow moment, e.g. a drift window closing, does not end the search)."""
    tried: list[dict] = []

    def holds(rate: float) -> bool:
        for _ in range(2):
            run = probe(rate)
            tried.append(run)
            print(f"  probe {rate:6.1f}/s: {_line(run)}" + ("" if sustained(run) else
                                                              f"  {run['degraded_reasons']}"), flush=True)
            if sustained(run):
                return True
        return False

    good, bad, rate = 0.0, None, start
    while bad is None and len(tried) < 16:
        if holds(rate):
            good, rate = rate, rate * 1.5
        else:
            bad = rate
    for _ in range(steps if bad is not None and good > 0 else 0):
        rate = (good + bad) / 2
        good, bad = (rate, bad) if holds(rate) else (good, rate)
    return good, tried


def _line(run: dict) -> str:
    return (f"answered {run['answered_rps']:.1f}/s ({run['answered_share']:.1%})  p50 {run['p50_ms']:.1f}  "
            f"p99 {run['p99_ms']:.1f}  p99.9 {run['p999_ms']:.1f} ms  degraded {run['degraded_share']:.2%}  "
            f"errors {run['errors']}  CPU {run['cpu_ms_per_request_total']:.1f} ms/request "
            f"({run['cpu_ms_per_request_above_idle_total']:.1f} above idle)")


def empty_hop(binary: str, data: Path, rps: float, seconds: float) -> dict:
    """ghz at `rps` with the same requests against an empty RecommendService (answers an empty response at
    once) on our gRPC bootstrap, in its own process."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", EMPTY_SERVER, str(port)], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the empty gRPC server did not start")
        report = ghz(binary, f"127.0.0.1:{port}", RECOMMEND, data, rps, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    lat = report["latencies_ms"]
    return {"rps": round(rps, 1), "answered": len(lat), "p50_ms": round(pct(lat, 50), 3),
            "p99_ms": round(pct(lat, 99), 3), "p999_ms": round(pct(lat, 99.9), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--interactions", type=int, default=60_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured rate")
    parser.add_argument("--probe-seconds", type=float, default=8.0, help="per rate tried while searching the max")
    parser.add_argument("--start-rps", type=float, default=20.0)
    parser.add_argument("--bisect", type=int, default=3, help="bisection steps after the first failed rate")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the built data, models, features and index here and reuse them on the next run "
                             "with the same --items/--users/--interactions (default: a temporary folder)")
    args = parser.parse_args()
    binary = ghz_binary()
    with tempfile.TemporaryDirectory(prefix="recsys-load-") as tmp, local_broker(Path(tmp) / "kafka") as broker:
        var = args.work or Path(tmp)
        var.mkdir(parents=True, exist_ok=True)
        cfg = StackConfig.default(var, broker.bootstrap, fixed_ports=False, ranking_instances=1)
        opts = DemoOptions(var_dir=var, kafka_bootstrap=broker.bootstrap, users=args.users, items=args.items,
                           interactions=args.interactions)
        built, params = var / "built.json", {"items": args.items, "users": args.users,
                                             "interactions": args.interactions}
        if built.exists() and json.loads(built.read_text()) == params:
            print(f"reusing the build in {var}", flush=True)
            data_dir = var / "demo-data"
            compile_ranker(cfg)
        else:
            print("building the dataset, models, features and index ...", flush=True)
            data_dir, _ = prepare(opts, cfg)
            built.write_text(json.dumps(params))
        users = list(load_dataset(data_dir).interactions["user_id"].astype(str).unique())
        rng = np.random.default_rng(11)
        data = Path(tmp) / "requests.json"
        data.write_text(json.dumps([{"user_id": str(u), "k": 10} for u in rng.choice(users, size=5000)]))
        supervisor = start_stack(cfg, watch=False)
        try:
            print("warming up ...", flush=True)
            level(binary, cfg, supervisor, data, 10, 5)
            idle = idle_cpu(supervisor, args.seconds)
            print(f"idle CPU ms/s by process: { {k: round(v * 1000, 1) for k, v in idle.items()} }", flush=True)
            print("searching the highest rate with < 1% degraded answers:", flush=True)
            max_rps, probes = find_max_rate(lambda r: level(binary, cfg, supervisor, data, r, args.probe_seconds, idle),
                                            args.start_rps, args.bisect)
            if max_rps <= 0:
                raise SystemExit(f"no rate from {args.start_rps}/s up was sustained: {probes}")
            levels = {}
            for share in (25, 50, 75, 100):
                run = level(binary, cfg, supervisor, data, max_rps * share / 100, args.seconds, idle)
                levels[share] = run
                print(f"{share:>3}% ({run['target_rps']:.1f}/s): {_line(run)}\n"
                      f"      CPU ms/request above idle by process: {run['cpu_ms_per_request_above_idle']}  ghz "
                      f"{run['ghz_cpu_ms_per_request']}", flush=True)
        finally:
            supervisor.stop()
        floor = empty_hop(binary, data, max_rps * 0.75, args.seconds)
    print(f"empty gRPC hop on our bootstrap at {floor['rps']:.1f}/s: p50 {floor['p50_ms']:.2f}  "
          f"p99 {floor['p99_ms']:.2f}  p99.9 {floor['p999_ms']:.2f} ms", flush=True)
    at75 = levels[75]
    print(json.dumps({
        "generator": "ghz --async (open loop)", "max_rate_rps": round(max_rps, 1),
        "p50_ms_at_75pct": at75["p50_ms"], "p99_ms_at_75pct": at75["p99_ms"], "p999_ms_at_75pct": at75["p999_ms"],
        "degraded_at_75pct": at75["degraded_share"], "errors_at_75pct": at75["errors"],
        # the CPU a request adds (the idle processes' own CPU over the same time taken out), and all of it
        "cpu_ms_per_request": at75["cpu_ms_per_request_above_idle_total"],
        "cpu_ms_per_request_by_process": at75["cpu_ms_per_request_above_idle"],
        "cpu_ms_per_request_with_idle": at75["cpu_ms_per_request_total"], "idle_cpu_ms_per_s":
            {k: round(v * 1000, 1) for k, v in idle.items()},
        "empty_hop_p99_ms": floor["p99_ms"], "empty_hop_p50_ms": floor["p50_ms"],
        "p99_ratio_to_empty_hop_at_75pct": round(at75["p99_ms"] / floor["p99_ms"], 2),
        "levels": levels, "probes": probes, "empty_hop": floor,
    }))


if __name__ == "__main__":
    main()
