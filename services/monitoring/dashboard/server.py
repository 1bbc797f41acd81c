"""The dashboard's HTTP server: uvicorn in a thread of the monitoring process (HTTPS with the service's own
certificate when RECSYS_TLS_CERT/KEY are set)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from recsys.common.tls import TlsConfig

log = logging.getLogger("recsys.monitoring.dashboard")


class DashboardServer:
    """Serve `app` on host:port until `stop` (port 0: a free one, see `port` after `start`)."""

    def __init__(self, app: FastAPI, host: str, port: int, tls: TlsConfig | None = None) -> None:
        self.host = host
        self.tls = tls if tls is not None and tls.server_enabled else None
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))  # bound here, so a taken port fails the service's start, not a thread
        self.port = self._sock.getsockname()[1]
        ssl = {"ssl_certfile": self.tls.cert_file, "ssl_keyfile": self.tls.key_file} if self.tls else {}
        cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2,
                             **ssl)
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="dashboard-http", daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    def start(self, ready_timeout_s: float = 10.0) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + ready_timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError(f"dashboard did not start on {self.host}:{self.port}")
        log.info("dashboard serving", extra={"url": self.url})
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._sock.close()
