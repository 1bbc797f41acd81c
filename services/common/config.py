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
KAFKA_ITEMS_TOPIC = declare(
    "RECSYS_KAFKA_ITEMS_TOPIC", "recsys.items",
    "Topic of item changes (ItemChange keyed by item_id, compacted): CatalogService writes it, product apps may too",
)

# Where the services find each other and the model registry (shared by several services).
CATALOG_APPLY_SHARE = declare(
    "RECSYS_CATALOG_APPLY_SHARE",
    0.25,
    "Share of one core's time the catalogue followers' heavy work (Milvus upserts, online feature writes) may take "
    "while a burst of item changes goes through: after each batch they rest in proportion (1 = no pacing)",
)
FEATURES_ADDR = declare("RECSYS_FEATURES_ADDR", "127.0.0.1:50052", "Feature service address (host:port)")
CANDIDATES_ADDR = declare("RECSYS_CANDIDATES_ADDR", "127.0.0.1:50053", "Candidate service address (host:port)")
RANKING_ADDR = declare(
    "RECSYS_RANKING_ADDR",
    "127.0.0.1:50054",
    "Ranking service (Ray Serve gRPC) address; several instances as IP:port,IP:port or dns:///name:port",
)
RANKING_INSTANCES = declare(
    "RECSYS_RANKING_INSTANCES",
    1,
    "Ranking instances `recsys serve` / `recsys demo` start, each with its own local Ray; the gateway balances "
    "over them (2: a crashed instance's restart is not an outage)",
    scope="local",
)
MONITORING_ADDR = declare("RECSYS_MONITORING_ADDR", "127.0.0.1:50055", "Monitoring service address (host:port)")
RANKING_APP = declare("RECSYS_RANKING_APP", "ranking", "Ray Serve application name of the ranker")
MODELS_DIR = declare("RECSYS_MODELS_DIR", "var/models", "Model registry root (versioned folders + `latest`)")

# Transport security of every gRPC server and client (services/common/tls.py); all empty = plaintext.
TLS_CERT = declare(
    "RECSYS_TLS_CERT", "", "PEM certificate (chain) this process presents as a gRPC server and, with mTLS, as a "
    "client; with RECSYS_TLS_KEY it turns TLS on (empty = plaintext)"
)
TLS_KEY = declare("RECSYS_TLS_KEY", "", "PEM private key of RECSYS_TLS_CERT")
TLS_CA = declare(
    "RECSYS_TLS_CA", "", "PEM CA bundle: verifies client certificates (mTLS) and the servers this process calls "
    "(empty = the system roots when calling a TLS server)"
)
TLS_CLIENT_AUTH = declare(
    "RECSYS_TLS_CLIENT_AUTH", "none", "none = server TLS only; require = mutual TLS: refuse peers without a "
    "certificate signed by RECSYS_TLS_CA"
)
TLS_SERVER_NAME = declare(
    "RECSYS_TLS_SERVER_NAME", "", "Host name clients check in server certificates instead of the target's host"
)
TLS_PLAINTEXT_TARGETS = declare(
    "RECSYS_TLS_PLAINTEXT_TARGETS", "", "Comma-separated host:port targets called in plaintext although TLS is "
    "on (e.g. the Ray Serve gRPC proxy, which has no TLS)"
)

# Authentication of the public surface (services/common/auth.py): RecommendService, EventService,
# MonitoringService. Internal services rely on mTLS.
AUTH_MODE = declare(
    "RECSYS_AUTH_MODE", "off", "Authentication of the public RPCs: off, api_key, jwt or any (API key or JWT)"
)
AUTH_KEYS_FILE = declare(
    "RECSYS_AUTH_KEYS_FILE", "", "JSON file of API keys {keys: [{id, hash, scopes, rate_per_s, burst}]} "
    "(hashes only; `recsys auth new-key` writes it); re-read when it changes"
)
AUTH_KEYS = declare("RECSYS_AUTH_KEYS", "", "The same API key document inline (e.g. from a Secret)")
AUTH_JWT_SECRET = declare("RECSYS_AUTH_JWT_SECRET", "", "HS256 secret of bearer tokens (at least 32 bytes)")
AUTH_JWT_SECRET_FILE = declare("RECSYS_AUTH_JWT_SECRET_FILE", "", "File holding the HS256 secret instead")
AUTH_JWT_ISSUER = declare("RECSYS_AUTH_JWT_ISSUER", "", "Required `iss` of bearer tokens (empty = not checked)")
AUTH_JWT_AUDIENCE = declare("RECSYS_AUTH_JWT_AUDIENCE", "", "Required `aud` of bearer tokens (empty = not checked)")
CLIENT_API_KEY = declare(
    "RECSYS_CLIENT_API_KEY", "", "API key (<id>.<secret>) recsys' own jobs send to the public RPCs when auth is on "
    "(e.g. `recsys canary decide` reading monitoring)"
)
CLIENT_TOKEN = declare("RECSYS_CLIENT_TOKEN", "", "Bearer token (JWT) recsys' own jobs send instead of an API key")
AUTH_JWT_LEEWAY_S = declare("RECSYS_AUTH_JWT_LEEWAY_S", 30.0, "Clock skew tolerated on `exp` / `nbf` (seconds)")

# Kafka client security, applied to every producer, consumer and admin client (services/common/kafka/clients.py).
KAFKA_SECURITY_PROTOCOL = declare(
    "RECSYS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
)
KAFKA_SASL_MECHANISM = declare(
    "RECSYS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"
)
KAFKA_SASL_USERNAME = declare("RECSYS_KAFKA_SASL_USERNAME", "", "SASL user name (SASL_* protocols)")
KAFKA_SASL_PASSWORD = declare("RECSYS_KAFKA_SASL_PASSWORD", "", "SASL password (from a Secret)")
KAFKA_SSL_CAFILE = declare(
    "RECSYS_KAFKA_SSL_CAFILE", "", "PEM CA bundle verifying the brokers (SSL, SASL_SSL; empty = system roots)"
)
KAFKA_SSL_CERTFILE = declare("RECSYS_KAFKA_SSL_CERTFILE", "", "PEM client certificate for brokers requiring mTLS")
KAFKA_SSL_KEYFILE = declare("RECSYS_KAFKA_SSL_KEYFILE", "", "PEM private key of RECSYS_KAFKA_SSL_CERTFILE")
KAFKA_SSL_CHECK_HOSTNAME = declare(
    "RECSYS_KAFKA_SSL_CHECK_HOSTNAME", True, "Check the broker's host name against its certificate"
)

# Per-key rate limits of the gateway's public RPCs (services/common/ratelimit.py).
GATEWAY_RATE_LIMIT_RPS = declare(
    "RECSYS_GATEWAY_RATE_LIMIT_RPS", 0.0, "Requests per second per API key (or per client address without auth) "
    "before RESOURCE_EXHAUSTED; per gateway replica; 0 = no limit. A key's rate_per_s overrides it", "gateway"
)
GATEWAY_RATE_LIMIT_BURST = declare(
    "RECSYS_GATEWAY_RATE_LIMIT_BURST", 0.0, "Token bucket size per key (0 = one second of the rate)", "gateway"
)
GATEWAY_RATE_LIMIT_MAX_KEYS = declare(
    "RECSYS_GATEWAY_RATE_LIMIT_MAX_KEYS", 10000, "Buckets kept (least recently used dropped first)", "gateway"
)
