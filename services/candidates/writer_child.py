"""The catalogue writer in a child process of lower CPU priority (see writer.py for why).

`ChildWriter.write(job)` sends the job, with the Milvus endpoint the service itself uses, over a socket pair to
`python -m recsys.candidates.writer_child FD NICE` and waits for the number of rows written. The child runs a
`MilvusWriter` at `nice` NICE, so that while a burst of changes is embedded and encoded the serving threads win the
cores; with cores to spare it is as fast as in-process. It is started with the service (`children.spawn`: it dies
with it, however the service dies) and again after it died or stopped answering within `timeout_s`; the job that
failed so is retried by `CatalogChanges`. No multiprocessing: it would re-run the caller's main module.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from recsys.candidates.writer import MilvusWriter, WriteJob
from recsys.common import children

log = logging.getLogger("recsys.candidates.writer_child")

class ChildWriter:
    """An `ItemWriter` whose writing happens in a child process; `endpoint()` gives the Milvus (uri, token)."""

    def __init__(self, endpoint: Callable[[], tuple[str, str]], nice: int = 10, timeout_s: float = 60.0) -> None:
        if not 0 <= nice <= 19:
            raise ValueError(f"niceness must be 0-19, not {nice}")
        self.endpoint = endpoint
        self.nice = nice
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def start(self) -> ChildWriter:
        with self._lock:
            self._ensure()
        return self

    def write(self, job: WriteJob) -> int:
        with self._lock:
            conn = self._ensure()
            try:
                conn.send((*self.endpoint(), job))
                if not conn.poll(self.timeout_s):
                    raise TimeoutError(f"the catalogue writer gave no answer in {self.timeout_s:.0f} s")
                status, value = conn.recv()
            except (OSError, EOFError, TimeoutError) as exc:
                self._stop()  # a dead or stuck child: a fresh one for the retry
                raise ConnectionError(f"catalogue writer process: {type(exc).__name__}: {exc}") from exc
        if status != "ok":
            raise RuntimeError(f"catalogue writer: {value}")
        return int(value)

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure(self) -> Connection:
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            return self._conn
        self._stop()
        mine, theirs = socket.socketpair()
        try:
            self._proc = children.spawn(
                [sys.executable, "-m", "recsys.candidates.writer_child", str(theirs.fileno()), str(self.nice)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, grace_s=2.0)
        finally:
            theirs.close()
        self._conn = Connection(mine.detach())
        log.info("catalogue writer started", extra={"pid": self._proc.pid, "nice": self.nice})
        return self._conn

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            children.stop(self._proc, grace_s=2.0)
            self._proc = None


def serve(conn: Connection) -> None:
    """The child's loop: one job in, ("ok", rows written) or ("error", why) out, until the parent goes."""
    from pymilvus import MilvusClient

    client: MilvusClient | None = None
    endpoint: tuple[str, str] | None = None
    writer = MilvusWriter(lambda: client)
    while True:
        try:
            uri, token, job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if client is None or endpoint != (uri, token):
                if client is not None:
                    client.close()
                client, endpoint = MilvusClient(uri=uri, token=token, timeout=30.0), (uri, token)
            reply = ("ok", writer.write(job))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which retries; a fresh client then
            client, endpoint = None, None
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def main(argv: list[str]) -> int:
    from recsys.common.entry import process_defaults
    from recsys.common.logs import configure_logging

    process_defaults()
    configure_logging("candidates-writer")
    os.nice(int(argv[1]))
    serve(Connection(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
