"""gRPC client channels with the project's defaults (message limits, keepalive, request ids).

`channel(target)` (alias `secure_or_insecure_channel`) follows RECSYS_TLS_*: TLS, and mutual TLS when a client
certificate is configured, else plaintext; `insecure_channel` is always plaintext.
"""

from __future__ import annotations

import uuid

import grpc

from recsys.common import config
from recsys.common.interceptors import REQUEST_ID_HEADER
from recsys.common.tls import TlsConfig


def channel_options(max_message_bytes: int | None = None) -> list[tuple[str, int]]:
    size = max_message_bytes or config.GRPC_MAX_MESSAGE_BYTES.int()
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.enable_retries", 1),
        # Reconnect quickly after a peer restarts (the default backoff grows to 120 s, during which every
        # call fails UNAVAILABLE at once).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]


def insecure_channel(target: str) -> grpc.Channel:
    """A plaintext channel to target ("host:port")."""
    return grpc.insecure_channel(target, options=channel_options())


def channel(target: str, tls: TlsConfig | None = None, server_name: str | None = None) -> grpc.Channel:
    """A channel to target ("host:port"): TLS when `tls` (default: RECSYS_TLS_* from the environment) configures a
    CA or a client certificate and target is not one of its plaintext targets; plaintext otherwise.
    `server_name` (or RECSYS_TLS_SERVER_NAME) replaces the host name checked in the server's certificate."""
    return _make_channel(grpc, target, tls, server_name)


secure_or_insecure_channel = channel


def aio_channel(target: str, tls: TlsConfig | None = None, server_name: str | None = None) -> grpc.aio.Channel:
    """The asyncio counterpart of `channel` (same RECSYS_TLS_* rules)."""
    return _make_channel(grpc.aio, target, tls, server_name)


def _make_channel(api, target: str, tls: TlsConfig | None, server_name: str | None):
    """`api.insecure_channel` or `api.secure_channel` (api: `grpc` or `grpc.aio`) by the TLS rules of `channel`."""
    tls = TlsConfig.from_env() if tls is None else tls
    options: list[tuple[str, int | str]] = list(channel_options())
    if not tls.uses_tls_for(target):
        return api.insecure_channel(target, options=options)
    name = server_name or tls.server_name
    if name:
        options.append(("grpc.ssl_target_name_override", name))
    return api.secure_channel(target, tls.channel_credentials(), options=options)


def request_metadata(request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the request id across hops."""
    return ((REQUEST_ID_HEADER, request_id or uuid.uuid4().hex),)


def wait_ready(target: str, timeout_s: float = 30.0, tls: TlsConfig | None = None) -> None:
    """Block until a channel to target (see `channel`) is READY or raise TimeoutError."""
    with channel(target, tls) as ch:
        try:
            grpc.channel_ready_future(ch).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            raise TimeoutError(f"{target} not ready after {timeout_s}s") from exc
