"""Milvus Lite, the embedded default: one local `.db` file served by a milvus-lite child process.

Milvus Lite lets one process open a file (it takes an exclusive lock). So that `recsys index` can
rebuild and swap the index while the candidate service keeps serving, the process that opens the file
publishes the child's unix socket in `.<name>.endpoint` beside it, and any other process that finds the
file locked connects to that socket: every process talks to the same Milvus Lite, through the same
`MilvusClient` API as a Milvus server.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import logging
import os
import socket
import sys
import threading
import types
from pathlib import Path

log = logging.getLogger("recsys.candidates.lite")

_LOCK = threading.Lock()
_OWNED: dict[str, str] = {}  # resolved db path -> unix URI of the child this process started


class LiteUnavailable(RuntimeError):
    """The Milvus Lite file can be neither opened nor joined."""


def is_lite_uri(uri: str) -> bool:
    """True for a local Milvus Lite database file (pymilvus's rule: the URI ends with .db)."""
    return uri.endswith(".db")


def _ensure_pkg_resources() -> None:
    """milvus-lite 2.5.1 imports `pkg_resources`, which setuptools >= 81 no longer ships.

    It only calls `get_distribution(...).version`; provide that from importlib.metadata when missing.
    """
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        module = types.ModuleType("pkg_resources")

        class DistributionNotFound(Exception):
            pass

        def get_distribution(name: str) -> types.SimpleNamespace:
            try:
                return types.SimpleNamespace(project_name=name, version=importlib.metadata.version(name))
            except importlib.metadata.PackageNotFoundError as exc:
                raise DistributionNotFound(name) from exc

        module.DistributionNotFound = DistributionNotFound  # type: ignore[attr-defined]
        module.get_distribution = get_distribution  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = module


def _server_manager():
    _ensure_pkg_resources()
    from milvus_lite.server_manager import server_manager_instance

    return server_manager_instance


def _lock_path(db: Path) -> Path:
    return db.parent / f".{db.name}.lock"  # milvus-lite's own lock file


def endpoint_path(db: Path) -> Path:
    return db.parent / f".{db.name}.endpoint"


def _locked_by_other_process(db: Path) -> bool:
    """Probe milvus-lite's lock without taking it (never call for a file this process owns)."""
    lock = _lock_path(db)
    if not lock.exists():
        return False
    with open(lock, "a") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.lockf(fh, fcntl.LOCK_UN)
        return False


def _publish(db: Path, uri: str) -> None:
    tmp = endpoint_path(db).with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(uri)
    os.replace(tmp, endpoint_path(db))


def _joined_uri(db: Path) -> str:
    try:
        uri = endpoint_path(db).read_text().strip()
    except FileNotFoundError as exc:
        raise LiteUnavailable(f"{db} is open in another process that published no endpoint") from exc
    socket = uri.removeprefix("unix:")
    if not Path(socket).exists():
        raise LiteUnavailable(f"{db} is open in another process whose socket {socket} is gone")
    return uri


def open_lite(path: str | Path) -> str:
    """The unix URI of the Milvus Lite serving `path`: started here, or the holder's published socket."""
    db = Path(path).absolute().resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    key = str(db)
    with _LOCK:
        if key in _OWNED:
            return _OWNED[key]
        if not _locked_by_other_process(db):
            uri = _server_manager().start_and_get_uri(key)
            if uri is not None:
                _OWNED[key] = uri
                _publish(db, uri)
                log.info("milvus lite started", extra={"db": key, "uri": uri})
                return uri
        return _joined_uri(db)


def owns(path: str | Path) -> bool:
    """True when this process started the Milvus Lite child for `path`."""
    return str(Path(path).absolute().resolve()) in _OWNED


def socket_alive(uri: str, timeout_s: float = 0.5) -> bool:
    """True when something accepts connections on the unix socket of `uri` ("unix:/path")."""
    path = uri.removeprefix("unix:")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def restart_lite(path: str | Path) -> str:
    """Restart the child this process owns if it died; for a joined file, re-read the endpoint."""
    db = Path(path).absolute().resolve()
    key = str(db)
    with _LOCK:
        if key in _OWNED and not socket_alive(_OWNED[key]):
            _server_manager().release_server(key)
            del _OWNED[key]
    return open_lite(db)


def release_lite(path: str | Path) -> None:
    """Stop the child this process owns for `path` (no-op otherwise)."""
    db = Path(path).absolute().resolve()
    key = str(db)
    with _LOCK:
        if key in _OWNED:
            _server_manager().release_server(key)
            del _OWNED[key]
            endpoint_path(db).unlink(missing_ok=True)
