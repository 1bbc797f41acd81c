"""gRPC client channels with the project's defaults (message limits, keepalive, request ids)."""

from __future__ import annotations

import uuid

import grpc

from recsys.common import config
from recsys.common.interceptors import REQUEST_ID_HEADER


def channel_options(max_message_bytes: int | None = None) -> list[tuple[str, int]]:
    size = max_message_bytes or config.GRPC_MAX_MESSAGE_BYTES.int()
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.enable_retries", 1),
    ]


def insecure_channel(target: str) -> grpc.Channel:
    """A plaintext channel to target ("host:port")."""
    return grpc.insecure_channel(target, options=channel_options())


def request_metadata(request_id: str | None = None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying the request id across hops."""
    return ((REQUEST_ID_HEADER, request_id or uuid.uuid4().hex),)


def wait_ready(target: str, timeout_s: float = 30.0) -> None:
    """Block until a channel to target is READY or raise TimeoutError."""
    with insecure_channel(target) as ch:
        try:
            grpc.channel_ready_future(ch).result(timeout=timeout_s)
        except grpc.FutureTimeoutError as exc:
            raise TimeoutError(f"{target} not ready after {timeout_s}s") from exc
