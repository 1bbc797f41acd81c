"""Errors handlers raise; the server interceptor maps them to gRPC status codes."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error with a gRPC status code and a message safe to show the caller."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """A request field is invalid; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class CliError(Exception):
    """A bad command-line input: `recsys` prints the message and exits with code 2."""
