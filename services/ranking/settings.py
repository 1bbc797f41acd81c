"""Ranking service configuration (environment variables, read once at start-up).

Addresses shared with other services (`RECSYS_FEATURES_ADDR`, `RECSYS_RANKING_APP`, `RECSYS_MODELS_DIR`) are
declared in `recsys.common.config`; everything below belongs to the ranking service alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from recsys.common import config
from recsys.common.config import ConfigError, declare
from recsys.model.rankers import canonical, names

SCOPE = "ranking"
#: Every ranker the service can serve: the modules of `recsys.model.rankers`.
MODELS = names()


PORT = declare("RECSYS_RANKING_PORT", 50054, "Ray Serve gRPC proxy port of the ranking service (binds [::])", SCOPE)
RAY_ADDRESS = declare(
    "RECSYS_RAY_ADDRESS", "", "Ray cluster to join (e.g. ray://head:10001 or auto); empty = start a local Ray", SCOPE
)
RAY_NUM_CPUS = declare("RECSYS_RAY_NUM_CPUS", 2, "CPUs of the local Ray", SCOPE)
RAY_OBJECT_STORE_BYTES = declare("RECSYS_RAY_OBJECT_STORE_BYTES", 200_000_000, "Object store of the local Ray", SCOPE)
RAY_TEMP_DIR = declare(
    "RECSYS_RAY_TEMP_DIR", "", "Temp/session folder of the local Ray (short: unix sockets); empty = <var>/ray", SCOPE
)
RAY_FAST_PATH = declare(
    "RECSYS_RAY_FAST_PATH",
    True,
    "Local Ray: Serve's low-latency settings in the env of the Ray processes (proxy->replica over gRPC, router "
    "and user code on the main loop, buffered request-path logs, a 0.5 s controller loop and 1 s metrics export, "
    "passive OpenMP waits; a variable already set wins; see services/ranking/README.md)",
    SCOPE,
)
DIRECT_PORTS = declare(
    "RECSYS_RANKING_DIRECT_PORTS",
    "",
    "Local Ray: FIRST-LAST ports for the replicas' own gRPC ingress (Ray Serve direct ingress, binds [::]): callers "
    "skip the proxy's hop (RECSYS_RANKING_DIRECT_ADDR); empty = off, the proxy only",
    SCOPE,
)
DIRECT_DRAIN_S = declare(
    "RECSYS_RANKING_DIRECT_DRAIN_S",
    2.0,
    "Least time a stopping replica keeps its direct ingress open (Serve's default, 30 s, is for external load "
    "balancers; the gateway turns to the proxy on its own)",
    SCOPE,
)
DEFAULT_MODEL = declare("RECSYS_RANKING_DEFAULT_MODEL", "dcn", "Ranker used when a request names none", SCOPE)
MODEL_VERSIONS = declare(
    "RECSYS_RANKING_MODEL_VERSIONS",
    "",
    "Pinned versions, e.g. dcn=v3,lightgbm=v2; a model not pinned follows the registry's `latest`",
    SCOPE,
)
WATCH_S = declare(
    "RECSYS_RANKING_WATCH_S", 10.0, "Seconds between checks of the registry's `latest` for hot swaps (0 = off)", SCOPE
)
MAX_CANDIDATES = declare("RECSYS_RANKING_MAX_CANDIDATES", 1000, "Most candidates one Rank request may carry", SCOPE)
BATCHING = declare(
    "RECSYS_RANKING_BATCHING",
    False,
    "Dynamic batching of concurrent requests (@serve.batch); off: no gain measured on CPU with ~300 candidates",
    SCOPE,
)
MAX_BATCH = declare("RECSYS_RANKING_MAX_BATCH", 8, "Most requests scored in one batch", SCOPE)
BATCH_WAIT_MS = declare(
    "RECSYS_RANKING_BATCH_WAIT_MS",
    0.0,
    "Wait for more requests after the first of a batch (0 = take what is queued)",
    SCOPE,
)
TORCH_THREADS = declare("RECSYS_RANKING_TORCH_THREADS", 1, "torch intra-op threads per replica (DCN-v2)", SCOPE)
LGBM_THREADS = declare("RECSYS_RANKING_LGBM_THREADS", 2, "LightGBM threads per replica", SCOPE)
LGBM_COMPILED = declare(
    "RECSYS_RANKING_LGBM_COMPILED",
    True,
    "Score LightGBM with the forest compiled to native code (lleaves; same scores, ~5x faster); LightGBM's "
    "own predictor serves until it is compiled and verified",
    SCOPE,
)
LGBM_COMPILE_DIR = declare(
    "RECSYS_RANKING_LGBM_COMPILE_DIR", "", "Cache of compiled forests (per model and CPU); empty = <var>/compiled",
    SCOPE,
)
VERSION_CACHE = declare(
    "RECSYS_RANKING_VERSION_CACHE", 2, "Non-active versions per model kept loaded for explicit requests", SCOPE
)
REPLICAS = declare("RECSYS_RANKING_REPLICAS", 1, "Replicas (the minimum when autoscaling)", SCOPE)
MAX_REPLICAS = declare(
    "RECSYS_RANKING_MAX_REPLICAS", 0, "Autoscaling upper bound (0 or <= RECSYS_RANKING_REPLICAS = fixed)", SCOPE
)
TARGET_ONGOING = declare(
    "RECSYS_RANKING_TARGET_ONGOING", 4.0, "Autoscaling target of in-flight requests per replica", SCOPE
)
MAX_ONGOING = declare("RECSYS_RANKING_MAX_ONGOING", 64, "In-flight requests per replica before queueing", SCOPE)
REPLICA_CPUS = declare("RECSYS_RANKING_REPLICA_CPUS", 1.0, "Ray CPUs reserved per replica", SCOPE)
REQUEST_TIMEOUT_S = declare(
    "RECSYS_RANKING_REQUEST_TIMEOUT_S", 5.0, "Serve's end-to-end timeout of one gRPC request (0 = none)", SCOPE
)
FETCH_FEATURES = declare(
    "RECSYS_RANKING_FETCH_FEATURES", True, "Fetch missing user/item features from RECSYS_FEATURES_ADDR", SCOPE
)
FETCH_TIMEOUT_MS = declare("RECSYS_RANKING_FETCH_TIMEOUT_MS", 50.0, "Deadline of one feature fetch", SCOPE)


@dataclass(frozen=True)
class RankingSettings:
    """What the ranking service reads from the environment; plain data, so it travels to the replicas."""

    app_name: str
    port: int
    models_dir: str
    default_model: str
    pinned_versions: dict[str, str]
    watch_s: float
    max_candidates: int
    batching: bool
    max_batch: int
    batch_wait_ms: float
    torch_threads: int
    lgbm_threads: int
    #: Folder of compiled LightGBM forests; "" = LightGBM's own predictor.
    lgbm_compile_dir: str
    version_cache: int
    replicas: int
    max_replicas: int
    target_ongoing: float
    max_ongoing: int
    replica_cpus: float
    request_timeout_s: float
    features_addr: str
    fetch_timeout_ms: float
    log_level: str

    @classmethod
    def from_env(cls) -> RankingSettings:
        default_model = canonical(DEFAULT_MODEL.str())
        if default_model not in MODELS:
            raise ConfigError(f"{DEFAULT_MODEL.name}={default_model!r} is not one of {', '.join(MODELS)}")
        return cls(
            app_name=config.RANKING_APP.str(),
            port=PORT.int(),
            models_dir=str(Path(config.MODELS_DIR.str()).resolve()),
            default_model=default_model,
            pinned_versions=parse_versions(MODEL_VERSIONS.str()),
            watch_s=WATCH_S.float(),
            max_candidates=MAX_CANDIDATES.int(),
            batching=BATCHING.bool(),
            max_batch=max(1, MAX_BATCH.int()),
            batch_wait_ms=max(0.0, BATCH_WAIT_MS.float()),
            torch_threads=max(1, TORCH_THREADS.int()),
            lgbm_threads=max(1, LGBM_THREADS.int()),
            lgbm_compile_dir=_compile_dir() if LGBM_COMPILED.bool() else "",
            version_cache=max(0, VERSION_CACHE.int()),
            replicas=max(1, REPLICAS.int()),
            max_replicas=MAX_REPLICAS.int(),
            target_ongoing=TARGET_ONGOING.float(),
            max_ongoing=max(1, MAX_ONGOING.int()),
            replica_cpus=max(0.0, REPLICA_CPUS.float()),
            request_timeout_s=REQUEST_TIMEOUT_S.float(),
            features_addr=config.FEATURES_ADDR.str() if FETCH_FEATURES.bool() else "",
            fetch_timeout_ms=FETCH_TIMEOUT_MS.float(),
            log_level=config.LOG_LEVEL.str(),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RankingSettings:
        return cls(**data)


def parse_port_range(text: str, name: str = DIRECT_PORTS.name) -> tuple[int, int] | None:
    """A port range: "50154-50157" -> (50154, 50157), "50154" -> (50154, 50154), "" -> None; else ConfigError."""
    text = text.strip()
    if not text:
        return None
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected FIRST-LAST ports, e.g. 50154-50157") from None
    if not 1024 <= low <= high <= 65535:
        raise ConfigError(f"{name}={text!r}: expected 1024 <= FIRST <= LAST <= 65535")
    return low, high


def parse_versions(text: str) -> dict[str, str]:
    """'dcn=v3,lightgbm=v2' -> {'dcn': 'v3', 'lightgbm': 'v2'}; model names are checked."""
    pins: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, version = part.partition("=")
        name, version = canonical(name), version.strip()
        if not sep or not version or name not in MODELS:
            raise ConfigError(f"{MODEL_VERSIONS.name}: {part!r} is not <{'|'.join(MODELS)}>=<version>")
        pins[name] = version
    return pins


def _compile_dir() -> str:
    return str(Path(LGBM_COMPILE_DIR.str() or Path(config.VAR_DIR.str()) / "compiled").resolve())
