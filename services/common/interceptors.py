"""Server interceptor: request ids, JSON access logs, Prometheus metrics, error mapping, deadlines."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc

from recsys.common import metrics
from recsys.common.errors import ServiceError
from recsys.common.logs import request_id_var

log = logging.getLogger("recsys.grpc")

REQUEST_ID_HEADER = "x-request-id"


def _method_name(full_method: str) -> str:
    return full_method.rsplit("/", 1)[-1]


def request_id_from(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id, or a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and value:
            return str(value)[:128]
    return uuid.uuid4().hex


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Wraps unary handlers of one service with logging, metrics, deadline checks and error mapping."""

    def __init__(self, service: str, quiet_methods: tuple[str, ...] = ("Check", "Watch")) -> None:
        self.service = service
        self.quiet = set(quiet_methods)

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = _method_name(handler_call_details.method)
        if method in self.quiet or handler_call_details.method.startswith("/grpc.reflection"):
            return handler
        inner = handler.unary_unary

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            return self._call(inner, method, request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _call(self, inner: Callable, method: str, request: Any, context: grpc.ServicerContext) -> Any:
        token = request_id_var.set(request_id_from(context))
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                context.abort(code, "deadline already expired on arrival")
            return inner(request, context)
        except ServiceError as exc:
            code = exc.code
            context.abort(exc.code, exc.message)
        except Exception as exc:  # abort() raises too; keep the code it set
            if context.code() is not None and context.code() != grpc.StatusCode.OK:
                code = context.code()
                raise
            if isinstance(exc, grpc.RpcError):
                raise
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error", extra={"method": method})
            context.abort(code, "internal error")
        finally:
            elapsed = time.perf_counter() - start
            if context.code() not in (None, grpc.StatusCode.OK):
                code = context.code()
            metrics.REQUESTS.labels(self.service, method).inc()
            metrics.LATENCY.labels(self.service, method).observe(elapsed)
            if code != grpc.StatusCode.OK:
                metrics.ERRORS.labels(self.service, method, code.name).inc()
            log.log(
                logging.DEBUG if code == grpc.StatusCode.OK else logging.WARNING,
                "rpc",
                extra={"method": method, "code": code.name, "ms": round(elapsed * 1000, 3)},
            )
            request_id_var.reset(token)


def wrap_behaviour(handler: grpc.RpcMethodHandler, around: Callable[[Callable, Any, grpc.ServicerContext], Any]) -> Any:
    """A copy of `handler` whose behaviour runs as `around(inner, request, context)`, for any of the four RPC
    kinds (for server interceptors that check a call before the servicer runs)."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, make in kinds:
        inner = getattr(handler, attribute)
        if inner is not None:
            return make(
                lambda request, context, inner=inner: around(inner, request, context),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
