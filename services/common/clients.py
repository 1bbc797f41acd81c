"""gRPC client channels with the project's defaults (message limits, keepalive, request ids).

`channel(target)` (alias `secure_or_insecure_channel`) follows RECSYS_TLS_*: TLS, and mutual TLS when a client
certificate is configured, else plaintext; `insecure_channel` is always plaintext.

A target may name several instances of a service: a comma-separated list of IP:port
("127.0.0.1:50054,127.0.0.1:50064") or a `dns:///name:port` target (a Kubernetes headless Service). Such
channels balance calls round-robin over the instances that are up, so one instance's crash only fails the
calls in flight on it.
"""

from __future__ import annotations

import ipaddress
import json
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


def grpc_target(address: str) -> str:
    """The gRPC target for an address: "host:port" and scheme targets as they are; a comma-separated list of
    IP:port as gRPC's `ipv4:`/`ipv6:` list target (ValueError for a host name in a list: use `dns:///`)."""
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) <= 1:
        return address.strip()
    families = set()
    for part in parts:
        host = part.rsplit(":", 1)[0].strip("[]")
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ValueError(f"{address!r}: a list of instances takes IP:port entries, not {part!r}") from None
    if len(families) > 1:
        raise ValueError(f"{address!r}: a list of instances mixes IPv4 and IPv6")
    return f"ipv{families.pop()}:" + ",".join(parts)


def balanced(address: str) -> bool:
    """True when the address names several instances (a list, or a DNS name that may resolve to several)."""
    return "," in address or address.startswith("dns:")


def retry_service_config(max_attempts: int = 2, status_codes: tuple[str, ...] = ("UNAVAILABLE",)) -> str:
    """A channel service config retrying every method on `status_codes` (within the call's deadline): with
    several instances the retry goes to another one. Only for idempotent calls."""
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.005s",
        "maxBackoff": "0.05s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(status_codes),
    }
    return json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": policy}]})


def insecure_channel(target: str) -> grpc.Channel:
    """A plaintext channel to target ("host:port" or a list of instances)."""
    return grpc.insecure_channel(grpc_target(target), options=_options(target, None))


def channel(
    target: str, tls: TlsConfig | None = None, server_name: str | None = None, service_config: str | None = None
) -> grpc.Channel:
    """A channel to target ("host:port" or a list of instances): TLS when `tls` (default: RECSYS_TLS_* from the
    environment) configures a CA or a client certificate and target is not one of its plaintext targets;
    plaintext otherwise.
    `server_name` (or RECSYS_TLS_SERVER_NAME) replaces the host name checked in the server's certificate;
    `service_config` (JSON, e.g. `retry_service_config()`) sets the channel's method config."""
    return _make_channel(grpc, target, tls, server_name, service_config)


secure_or_insecure_channel = channel


def aio_channel(
    target: str, tls: TlsConfig | None = None, server_name: str | None = None, service_config: str | None = None
) -> grpc.aio.Channel:
    """The asyncio counterpart of `channel` (same RECSYS_TLS_* rules)."""
    return _make_channel(grpc.aio, target, tls, server_name, service_config)


def _options(target: str, service_config: str | None) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = list(channel_options())
    if balanced(target):
        options.append(("grpc.lb_policy_name", "round_robin"))
    if service_config:
        options.append(("grpc.service_config", service_config))
    return options


def _make_channel(api, target: str, tls: TlsConfig | None, server_name: str | None, service_config: str | None):
    """`api.insecure_channel` or `api.secure_channel` (api: `grpc` or `grpc.aio`) by the TLS rules of `channel`."""
    tls = TlsConfig.from_env() if tls is None else tls
    options = _options(target, service_config)
    if not tls.uses_tls_for(target):
        return api.insecure_channel(grpc_target(target), options=options)
    name = server_name or tls.server_name
    if name:
        options.append(("grpc.ssl_target_name_override", name))
    return api.secure_channel(grpc_target(target), tls.channel_credentials(), options=options)


def request_metadata(request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the request id across hops."""
    return ((REQUEST_ID_HEADER, request_id or uuid.uuid4().hex),)


def credential_metadata() -> tuple[tuple[str, str], ...]:
    """The credentials recsys' own jobs present to a public RPC: RECSYS_CLIENT_TOKEN as a bearer token, else
    RECSYS_CLIENT_API_KEY as `x-api-key`, else none (auth off)."""
    token, key = config.CLIENT_TOKEN.str().strip(), config.CLIENT_API_KEY.str().strip()
    if token:
        return (("authorization", f"Bearer {token}"),)
    if key:
        return (("x-api-key", key),)
    return ()


def wait_ready(target: str, timeout_s: float = 30.0, tls: TlsConfig | None = None) -> None:
    """Block until a channel to target (see `channel`) is READY or raise TimeoutError."""
    with channel(target, tls) as ch:
        try:
            grpc.channel_ready_future(ch).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            raise TimeoutError(f"{target} not ready after {timeout_s}s") from exc
