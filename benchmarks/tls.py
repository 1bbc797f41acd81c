"""TLS overhead on one hop: the gateway's item-features call (300 items x 20 features, ~30 KB answer).

A FeatureService answering a fixed response runs on the real bootstrap (GrpcServer) in a child process, once
in plaintext, once with TLS and once with mutual TLS (certificates from deploy/local/certs.sh); one client
calls them sequentially over long-lived channels (as the gateway does), after a warm-up, interleaving the
three modes call by call so that machine noise falls on all of them alike. Reports p50 / p99 per mode and the
p99 overhead of TLS and mTLS against plaintext (target: <= 1 ms).

    python benchmarks/tls.py [--calls 3000] [--repeats 3] [--items 300]

Prints figures, then one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recsys.common.children import spawn

REPO = Path(__file__).resolve().parents[1]
MODES = ("plaintext", "tls", "mtls")
FEATURES = 20


def tls_for(mode: str, certs: Path, side: str):
    from recsys.common.tls import TlsConfig

    if mode == "plaintext":
        return TlsConfig()
    ca = str(certs / "ca.crt")
    if side == "server":
        return TlsConfig(str(certs / "server.crt"), str(certs / "server.key"), ca, require_client_cert=mode == "mtls")
    if mode == "tls":
        return TlsConfig(ca_file=ca)
    return TlsConfig(str(certs / "client.crt"), str(certs / "client.key"), ca)


def serve(mode: str, certs: Path, items: int) -> None:
    """Child process: a FeatureService on the bootstrap; prints its port, serves until stdin closes."""
    from recsys.common.server import GrpcServer, ServerOptions
    from recsys.v1 import features_pb2, features_pb2_grpc

    rng = np.random.default_rng(0)
    response = features_pb2.GetItemFeaturesResponse(features=features_pb2.FeatureMatrix(
        names=[f"item_f{i}" for i in range(FEATURES)], entity_ids=[f"item{i}" for i in range(items)],
        found=[True] * items, values=rng.random(items * FEATURES, dtype=np.float32).tolist(),
    ))

    class Features(features_pb2_grpc.FeatureServiceServicer):
        def GetItemFeatures(self, request, context):
            return response

    server = GrpcServer(
        "tls-bench", [lambda s: features_pb2_grpc.add_FeatureServiceServicer_to_server(Features(), s)],
        ["recsys.v1.FeatureService"], ServerOptions(workers=4, tls=tls_for(mode, certs, "server")),
    ).start(metrics=False)
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop(0)


def measure(certs: Path, items: int, calls: int, warmup: int) -> tuple[dict[str, list[float]], int]:
    """Latencies (ms) per mode: one server per mode, calls interleaved across the modes (a random order per
    step), so that load from elsewhere on the machine falls on every mode alike."""
    from recsys.common.clients import channel
    from recsys.v1 import features_pb2, features_pb2_grpc

    children = {}
    try:
        for mode in MODES:
            children[mode] = spawn(
                [sys.executable, __file__, "--serve", mode, "--certs", str(certs), "--items", str(items)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={**os.environ, "RECSYS_LOG_LEVEL": "WARNING"},
            )
        channels = {m: channel(f"127.0.0.1:{int(c.stdout.readline())}", tls_for(m, certs, "client"))
                    for m, c in children.items()}
        stubs = {m: features_pb2_grpc.FeatureServiceStub(ch) for m, ch in channels.items()}
        request = features_pb2.GetItemFeaturesRequest(item_ids=[f"item{i}" for i in range(items)])
        size = 0
        for _ in range(warmup):
            for stub in stubs.values():
                size = stub.GetItemFeatures(request, timeout=5).ByteSize()
        out: dict[str, list[float]] = {m: [] for m in MODES}
        order = list(MODES)
        rng = np.random.default_rng(1)
        for _ in range(calls):
            rng.shuffle(order)
            for mode in order:
                start = time.perf_counter()
                stubs[mode].GetItemFeatures(request, timeout=5)
                out[mode].append((time.perf_counter() - start) * 1000)
        for ch in channels.values():
            ch.close()
        return out, size
    finally:
        for child in children.values():
            child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per mode and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="fresh servers and channels each time")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--certs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.certs, args.items)
        return 0

    with tempfile.TemporaryDirectory(prefix="recsys-tls-bench-") as tmp:
        certs = Path(tmp) / "certs"
        subprocess.run([str(REPO / "deploy" / "local" / "certs.sh"), "--out", str(certs)], check=True,
                       capture_output=True)
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        overheads: dict[str, list[float]] = {"tls": [], "mtls": []}
        size = 0
        for _ in range(args.repeats):
            latencies, size = measure(certs, args.items, args.calls, args.warmup)
            p99 = {m: float(np.percentile(v, 99)) for m, v in latencies.items()}
            for mode in overheads:
                overheads[mode].append(p99[mode] - p99["plaintext"])
            for mode, values in latencies.items():
                samples[mode] += values

    stats = {m: {"p50_ms": round(float(np.percentile(v, 50)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3)}
             for m, v in samples.items()}
    result = {
        "hop": f"GetItemFeatures {args.items} items x {FEATURES} features",
        "response_bytes": size,
        "calls_per_mode": args.calls * args.repeats,
        **stats,
        # The median over the repeats of (p99 of the mode - p99 of plaintext): robust to one noisy repeat.
        "tls_p99_overhead_ms": round(float(np.median(overheads["tls"])), 3),
        "mtls_p99_overhead_ms": round(float(np.median(overheads["mtls"])), 3),
        "tls_p50_overhead_ms": round(stats["tls"]["p50_ms"] - stats["plaintext"]["p50_ms"], 3),
        "target_overhead_ms": 1.0,
    }
    result["within_target"] = max(result["tls_p99_overhead_ms"], result["mtls_p99_overhead_ms"]) <= 1.0
    print(f"one hop, {result['hop']} ({size} bytes), {result['calls_per_mode']} sequential calls per mode")
    for mode in MODES:
        print(f"  {mode:<9} p50 {stats[mode]['p50_ms']:.3f} ms   p99 {stats[mode]['p99_ms']:.3f} ms")
    print(f"  p99 overhead (median of {args.repeats} repeats): TLS {result['tls_p99_overhead_ms']:+.3f} ms, "
          f"mTLS {result['mtls_p99_overhead_ms']:+.3f} ms (target <= 1 ms); p50 overhead TLS "
          f"{result['tls_p50_overhead_ms']:+.3f} ms")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
