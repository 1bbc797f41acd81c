"""Index a registry and query the candidate service over gRPC; print the answers as one JSON line.

Run by test_candidates_milvus_server.py twice on the same registry: against Milvus Lite, and (with
--server) against a real Milvus standalone from the PyPI package `milvus`, which must only run inside
a loopback-only network namespace (it binds every interface): the test starts this script under
`unshare -n` after `ip link set lo up`, so the server, the service and the client all live there.

usage: candidates_compare_app.py MODELS_DIR WORK_DIR [--server]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from recsys.common.ports import free_port


def _start_milvus_server(base: Path):
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base))
    server.listen_port = free_port()
    started = time.monotonic()
    server.start()
    print(f"milvus server ready in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return server, f"http://127.0.0.1:{server.listen_port}"


def _queries(models: Path) -> list[tuple[str, dict]]:
    import pandas as pd

    from recsys.model.registry import resolve_model_dir

    version = resolve_model_dir(models)
    history = pd.read_parquet(version / "features" / "user_history.parquet")
    items = json.loads((version / "two_tower" / "item_ids.json").read_text())
    users = [str(u) for u in history["user_id"][:4]]
    out: list[tuple[str, dict]] = []
    for n, user in enumerate([*users, "cold-start-user"]):
        recent = list(history["recent_item_ids"][n])[::-1] if n < len(users) else []
        out.append(("Retrieve", {"user_id": user, "k": 40, "recent_item_ids": recent}))
        out.append(
            (
                "Retrieve",
                {
                    "user_id": user,
                    "k": 30,
                    "recent_item_ids": recent,
                    "filter": {
                        "include_genres": ["Drama", "Comedy"],
                        "exclude_genres": ["Horror"],
                        "exclude_item_ids": items[:50],
                    },
                },
            )
        )
    for item in items[10:13]:
        out.append(("SimilarItems", {"item_id": item, "k": 20, "filter": {"exclude_genres": ["Action"]}}))
    return out


def main() -> None:
    models, work = Path(sys.argv[1]), Path(sys.argv[2])
    use_server = "--server" in sys.argv[3:]
    var = work / ("var-server" if use_server else "var-lite")
    var.mkdir(parents=True, exist_ok=True)
    milvus_server = None
    if use_server:
        milvus_server, uri = _start_milvus_server(work / "milvus-server")
    else:
        uri = str(var / "milvus" / "recsys.db")
    os.environ.update(
        RECSYS_MILVUS_URI=uri,
        RECSYS_VAR_DIR=str(var),
        RECSYS_MODELS_DIR=str(models),
        RECSYS_FEATURES_ADDR="",
        RECSYS_MILVUS_TIMEOUT_MS="2000",
        RECSYS_LOG_LEVEL="WARNING",
    )
    service = None
    try:
        from google.protobuf.json_format import ParseDict

        from recsys.candidates.main import build_service
        from recsys.cli import main as cli
        from recsys.common.clients import insecure_channel
        from recsys.v1 import candidates_pb2, candidates_pb2_grpc

        if cli(["index", "--quiet"]) != 0:
            raise SystemExit("index failed")
        service = build_service(port=0)
        service.server.start(metrics=False)
        answers = []
        with insecure_channel(service.server.address) as channel:
            stub = candidates_pb2_grpc.CandidateServiceStub(channel)
            for method, fields in _queries(models):
                request_type = getattr(candidates_pb2, f"{method}Request")
                response = getattr(stub, method)(ParseDict(fields, request_type()), timeout=30)
                answers.append(
                    {
                        "method": method,
                        "degraded": getattr(response, "degraded", False),
                        "candidates": [[c.item_id, round(c.score, 4), int(c.source)] for c in response.candidates],
                    }
                )
        print("RESULT " + json.dumps(answers), flush=True)
    finally:
        if service is not None:
            service.close()
        if milvus_server is not None:
            milvus_server.stop()


if __name__ == "__main__":
    main()
