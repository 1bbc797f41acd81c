"""One code path to Milvus: pymilvus `MilvusClient` for Milvus Lite (a local file) and a Milvus server.

The URI selects the deployment (`*.db` = Milvus Lite, `http(s)://host:port` = standalone or cluster);
everything above this module uses the same client calls for both.
"""

from __future__ import annotations

import logging
import threading

from pymilvus import MilvusClient

from recsys.candidates import lite
from recsys.candidates.settings import MilvusTarget

log = logging.getLogger("recsys.candidates.milvus")
# pymilvus logs every failed RPC with a traceback at ERROR; callers here handle (and log) failures themselves.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)


class Milvus:
    """A reconnectable `MilvusClient` for one target; `client` is safe to share across threads."""

    def __init__(self, target: MilvusTarget, timeout_s: float = 30.0, lazy: bool = False) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        try:
            self.client = self._connect()
        except Exception as exc:
            if not lazy:
                raise
            log.warning("milvus unreachable; calls fail until a reconnect succeeds", extra={"error": str(exc)})
            self.client = _Disconnected(str(exc))

    def _connect(self) -> MilvusClient:
        if self.target.is_lite:
            uri = lite.open_lite(self.target.uri)
            return MilvusClient(uri=uri, timeout=self.timeout_s)
        return MilvusClient(uri=self.target.uri, token=self.target.token, timeout=self.timeout_s)

    def endpoint(self) -> tuple[str, str]:
        """(uri, token) by which another process reaches this Milvus: for Lite, the socket of the server this
        process started or joined (a helper process never opens the file itself)."""
        if self.target.is_lite:
            return lite.open_lite(self.target.uri), ""
        return self.target.uri, self.target.token

    def reconnect(self) -> MilvusClient:
        """A fresh client; for a Lite file this process owns, the Lite child is restarted first."""
        with self._lock:
            try:
                self.client.close()
            except Exception:  # the old channel may already be broken
                log.debug("closing the old milvus client failed", exc_info=True)
            if self.target.is_lite:
                lite.restart_lite(self.target.uri)
            self.client = self._connect()
            return self.client

    def close(self) -> None:
        """Close the client; a Milvus Lite child this process started is stopped too."""
        try:
            self.client.close()
        except Exception:
            log.debug("closing the milvus client failed", exc_info=True)
        if self.target.is_lite:
            lite.release_lite(self.target.uri)


class _Disconnected:
    """Stands in for a client whose connection failed: every call raises ConnectionError."""

    def __init__(self, error: str) -> None:
        self.error = error

    def close(self) -> None:
        pass

    def __getattr__(self, name: str):
        def fail(*_args, **_kwargs):
            raise ConnectionError(f"milvus not connected: {self.error}")

        return fail


def connect(target: MilvusTarget | None = None, timeout_s: float = 30.0, lazy: bool = False) -> Milvus:
    """Connect to `target` (default: from the environment); `lazy` tolerates a Milvus that is down."""
    return Milvus(target or MilvusTarget.from_env(), timeout_s=timeout_s, lazy=lazy)
