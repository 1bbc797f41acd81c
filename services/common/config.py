"""Configuration from environment variables.

Every variable a service reads is declared once with `declare(...)`; the registry is the source of the
README's configuration table and of the Helm chart check, so an undeclared variable cannot slip in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class ConfigError(ValueError):
    """An environment variable holds a value that cannot be parsed."""


@dataclass(frozen=True)
class EnvVar:
    """One declared environment variable."""

    name: str
    default: str
    help: str
    scope: str

    def raw(self) -> str:
        """The value from the environment, or the default."""
        return os.environ.get(self.name, self.default)

    def str(self) -> str:
        return self.raw()

    def int(self) -> int:
        try:
            return int(self.raw())
        except ValueError as exc:
            raise ConfigError(f"{self.name}={self.raw()!r} is not an integer") from exc

    def float(self) -> float:
        try:
            return float(self.raw())
        except ValueError as exc:
            raise ConfigError(f"{self.name}={self.raw()!r} is not a number") from exc

    def bool(self) -> bool:
        value = self.raw().strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{self.name}={self.raw()!r} is not a boolean")

    def list(self) -> list[str]:
        return [part.strip() for part in self.raw().split(",") if part.strip()]


REGISTRY: dict[str, EnvVar] = {}


def declare(name: str, default: str | int | float | bool, help: str, scope: str = "common") -> EnvVar:
    """Declare (or return the already declared) environment variable `name`."""
    if isinstance(default, bool):
        default = "true" if default else "false"
    var = EnvVar(name=name, default=str(default), help=help, scope=scope)
    existing = REGISTRY.get(name)
    if existing is not None:
        if existing.default != var.default:
            raise ConfigError(f"{name} declared twice with different defaults")
        return existing  # the first declaration's help and scope stand
    REGISTRY[name] = var
    return var


# Shared by every service.
LOG_LEVEL = declare("RECSYS_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING, ERROR)")
BIND_HOST = declare("RECSYS_BIND_HOST", "127.0.0.1", "Address gRPC and metrics servers bind")
METRICS_PORT = declare("RECSYS_METRICS_PORT", 0, "Prometheus metrics HTTP port (0 = pick a free port)")
GRPC_WORKERS = declare("RECSYS_GRPC_WORKERS", 16, "gRPC server worker threads")
GRPC_MAX_CONCURRENT = declare(
    "RECSYS_GRPC_MAX_CONCURRENT_RPCS", 256, "In-flight RPCs before the server sheds with RESOURCE_EXHAUSTED"
)
GRPC_MAX_MESSAGE_BYTES = declare("RECSYS_GRPC_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, "gRPC message size limit")
SHUTDOWN_GRACE_S = declare("RECSYS_SHUTDOWN_GRACE_S", 10.0, "Seconds in-flight RPCs may drain on SIGTERM")
VAR_DIR = declare("RECSYS_VAR_DIR", "var", "Folder for local state (data, models, indexes, logs)")
KAFKA_BOOTSTRAP = declare("RECSYS_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers")
KAFKA_EVENTS_TOPIC = declare("RECSYS_KAFKA_EVENTS_TOPIC", "recsys.events", "Topic of user events")
KAFKA_IMPRESSIONS_TOPIC = declare(
    "RECSYS_KAFKA_IMPRESSIONS_TOPIC", "recsys.impressions", "Topic of served lists"
)
KAFKA_PREDICTIONS_TOPIC = declare(
    "RECSYS_KAFKA_PREDICTIONS_TOPIC", "recsys.predictions", "Topic of sampled served features and scores"
)
KAFKA_DLQ_TOPIC = declare("RECSYS_KAFKA_DLQ_TOPIC", "recsys.dead-letter", "Dead-letter topic")

# Where the services find each other and the model registry (shared by several services).
FEATURES_ADDR = declare("RECSYS_FEATURES_ADDR", "127.0.0.1:50052", "Feature service address (host:port)")
CANDIDATES_ADDR = declare("RECSYS_CANDIDATES_ADDR", "127.0.0.1:50053", "Candidate service address (host:port)")
RANKING_ADDR = declare("RECSYS_RANKING_ADDR", "127.0.0.1:50054", "Ranking service (Ray Serve gRPC) address")
MONITORING_ADDR = declare("RECSYS_MONITORING_ADDR", "127.0.0.1:50055", "Monitoring service address (host:port)")
RANKING_APP = declare("RECSYS_RANKING_APP", "ranking", "Ray Serve application name of the ranker")
MODELS_DIR = declare("RECSYS_MODELS_DIR", "var/models", "Model registry root (versioned folders + `latest`)")
