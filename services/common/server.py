"""The one gRPC server bootstrap every service uses.

`GrpcServer` adds health (`grpc.health.v1`), reflection, the observability interceptor, message size
limits and load shedding, binds to the configured host, exposes Prometheus metrics, and drains
in-flight RPCs on SIGTERM / SIGINT.

Security comes from the options (`ServerOptions.from_env` reads it): TLS or mutual TLS on the port
(RECSYS_TLS_*, see `recsys.common.tls`) and, for the public services, the authentication interceptor
(RECSYS_AUTH_*, see `recsys.common.auth`). Both are off by default: plaintext, no credentials.
Load shedding: beyond `max_concurrent_rpcs` calls in flight (running or queued for a worker) a new call
is refused at once with RESOURCE_EXHAUSTED instead of queueing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsys.common import config
from recsys.common.auth import Authenticator, AuthInterceptor
from recsys.common.heap import freeze_heap
from recsys.common.interceptors import ObservabilityInterceptor
from recsys.common.logs import configure_logging
from recsys.common.metrics import start_metrics_server
from recsys.common.tls import TlsConfig

log = logging.getLogger("recsys.server")

# A function like `add_FooServicer_to_server` bound to its servicer.
Registration = Callable[[grpc.Server], None]


@dataclass
class ServerOptions:
    """Bootstrap settings; `from_env` reads the shared RECSYS_* variables."""

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    workers: int = 16
    max_concurrent_rpcs: int = 256
    max_message_bytes: int = 16 * 1024 * 1024
    shutdown_grace_s: float = 10.0
    extra_options: list[tuple[str, Any]] = field(default_factory=list)
    #: TLS / mTLS of the port; None or without a certificate = plaintext.
    tls: TlsConfig | None = None
    #: Credentials checked on the public services' methods; None = no authentication.
    auth: Authenticator | None = None

    @classmethod
    def from_env(cls, port: int) -> ServerOptions:
        return cls(
            host=config.BIND_HOST.str(),
            port=port,
            metrics_port=config.METRICS_PORT.int(),
            workers=config.GRPC_WORKERS.int(),
            max_concurrent_rpcs=config.GRPC_MAX_CONCURRENT.int(),
            max_message_bytes=config.GRPC_MAX_MESSAGE_BYTES.int(),
            shutdown_grace_s=config.SHUTDOWN_GRACE_S.float(),
            tls=TlsConfig.from_env(),
            auth=Authenticator.from_env(),
        )


class GrpcServer:
    """A started-on-demand gRPC server for one service."""

    def __init__(
        self,
        service_name: str,
        registrations: Iterable[Registration],
        full_service_names: Iterable[str],
        options: ServerOptions,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
    ) -> None:
        """`interceptors` run inside the observability and authentication interceptors (so they see the
        caller: `recsys.common.auth.current_principal()`), in the order given."""
        self.service_name = service_name
        self.options = options
        self.full_service_names = list(full_service_names)
        self._stopped = threading.Event()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix=service_name),
            interceptors=[
                ObservabilityInterceptor(service_name),
                *([AuthInterceptor(options.auth)] if options.auth is not None else []),
                *interceptors,
            ],
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
            options=[
                ("grpc.max_send_message_length", options.max_message_bytes),
                ("grpc.max_receive_message_length", options.max_message_bytes),
                ("grpc.so_reuseport", 0),
                *options.extra_options,
            ],
        )
        for register in registrations:
            register(self._server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*self.full_service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self.secure = options.tls is not None and options.tls.server_enabled
        bind = f"{options.host}:{options.port}"
        if self.secure:
            self.port = self._server.add_secure_port(bind, options.tls.server_credentials())
        else:
            self.port = self._server.add_insecure_port(bind)
        if self.port == 0:
            raise RuntimeError(f"could not bind {options.host}:{options.port}")
        self.metrics_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.options.host}:{self.port}"

    def start(self, metrics: bool = True) -> GrpcServer:
        """Start serving, mark every service SERVING, and expose metrics."""
        self._server.start()
        if metrics:
            self.metrics_port = start_metrics_server(self.options.host, self.options.metrics_port)
        for name in ["", *self.full_service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            extra={
                "service": self.service_name, "address": self.address, "metrics_port": self.metrics_port,
                "tls": "mtls" if self.secure and self.options.tls.require_client_cert else
                       "tls" if self.secure else "plaintext",
                "auth": self.options.auth is not None,
            },
        )
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, report NOT_SERVING, and wait for in-flight RPCs up to the grace period."""
        if self._stopped.is_set():
            return
        self.health.enter_graceful_shutdown()
        grace = self.options.shutdown_grace_s if grace_s is None else grace_s
        self._server.stop(grace).wait()
        self._stopped.set()
        log.info("stopped", extra={"service": self.service_name})

    def wait(self) -> None:
        """Block until stopped."""
        self._stopped.wait()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT drain the server (call from the main thread)."""

        def _handle(signum: int, _frame: Any) -> None:
            log.info("signal received, draining", extra={"signal": signum})
            threading.Thread(target=self.stop, daemon=True).start()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)


def run_forever(server: GrpcServer) -> None:
    """Configure logs, start, freeze the start-up heap, handle signals and block: every service's main."""
    configure_logging(server.service_name, config.LOG_LEVEL.str())
    server.install_signal_handlers()
    server.start()
    freeze_heap()
    server.wait()
