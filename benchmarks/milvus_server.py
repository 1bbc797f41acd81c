"""A Milvus standalone (the PyPI package `milvus`, 2.3.5) for benchmarks, inside a loopback-only network namespace.

The server binds every interface with no setting to change that, so this refuses to start it unless the process's
network namespace has only `lo`: run the benchmark under `unshare -n sh -c 'ip link set lo up && ...'`. Its stop is
a kill after 1 s, and a quick restart on the same folder fails until its etcd session (30 s) expires: each run gets
a fresh folder.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from recsys.common.ports import free_port


def loopback_only() -> bool:
    """True when this process's network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


class MilvusServer:
    """`with MilvusServer(folder) as uri:` a started server, stopped on exit."""

    def __init__(self, base: Path) -> None:
        if not loopback_only():
            raise SystemExit(
                "--milvus-server binds every interface: run this inside a loopback-only network namespace "
                "(unshare -n sh -c 'ip link set lo up && ...')"
            )
        from milvus import MilvusServer as _Server

        self.server = _Server()
        self.server.set_base_dir(str(base))
        self.server.listen_port = free_port()

    def __enter__(self) -> str:
        started = time.perf_counter()
        self.server.start()
        print(f"milvus server: ready in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        return f"http://127.0.0.1:{self.server.listen_port}"

    def __exit__(self, *exc) -> None:
        self.server.stop()
