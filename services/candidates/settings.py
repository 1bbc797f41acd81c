"""Environment configuration of the candidate service and the `recsys index` job (declared once, here), and
`CandidateSettings.from_env()`, the one object built from it: the Milvus target, the index build and the
retrieval sections."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from recsys.candidates import lite
from recsys.common import config
from recsys.common.config import ConfigError, declare

PORT = declare("RECSYS_CANDIDATES_PORT", 50053, "Candidate service gRPC port", "candidates")
FEATURES_ADDR = config.FEATURES_ADDR  # shared: declared in recsys.common.config
MODELS_DIR = config.MODELS_DIR

MILVUS_URI = declare(
    "RECSYS_MILVUS_URI",
    "",
    "Milvus: a local *.db file = Milvus Lite (empty = <RECSYS_VAR_DIR>/milvus/recsys.db); "
    "http(s)://host:port = a Milvus server (standalone or cluster)",
    "candidates",
)
MILVUS_TOKEN = declare("RECSYS_MILVUS_TOKEN", "", "Milvus server token (user:password or API key)", "candidates")
MILVUS_COLLECTION = declare(
    "RECSYS_MILVUS_COLLECTION", "items", "Base name of the versioned item collections and their pointer", "candidates"
)
INDEX_TYPE = declare(
    "RECSYS_MILVUS_INDEX_TYPE",
    "FLAT",
    "Vector index type: FLAT (exact; on Milvus Lite 2.5.1 its IVF_FLAT / AUTOINDEX reached only ~0.89 recall@300 "
    "here), HNSW on a Milvus server",
    "candidates",
)
INDEX_PARAMS = declare(
    "RECSYS_MILVUS_INDEX_PARAMS", "{}", 'JSON build params of the vector index, e.g. {"M": 16}', "candidates"
)
SEARCH_PARAMS = declare(
    "RECSYS_MILVUS_SEARCH_PARAMS",
    "{}",
    'JSON search params, e.g. {"ef": 400} or {"nprobe": 32} (HNSW ef is raised to k when lower)',
    "candidates",
)
SEARCH_TIMEOUT_MS = declare(
    "RECSYS_MILVUS_TIMEOUT_MS", 50.0, "Milvus search deadline before the popularity fallback answers", "candidates"
)
SEARCH_BATCH = declare(
    "RECSYS_CANDIDATES_SEARCH_BATCH",
    8,
    "Most query vectors per Milvus search: searches queued behind one in flight go together (1 = never merge)",
    "candidates",
)
KEEP_VERSIONS = declare(
    "RECSYS_INDEX_KEEP_VERSIONS",
    2,
    "Collections kept (active + previous for rollback); older ones are dropped",
    "candidates",
)
INSERT_BATCH = declare("RECSYS_INDEX_INSERT_BATCH", 5000, "Rows per Milvus insert call when indexing", "candidates")
MAX_K = declare("RECSYS_CANDIDATES_MAX_K", 1000, "Largest k Retrieve / SimilarItems accept", "candidates")
MAX_EXCLUDE = declare(
    "RECSYS_CANDIDATES_MAX_EXCLUDE", 10000, "Largest exclude_item_ids list Retrieve accepts", "candidates"
)
REFRESH_S = declare(
    "RECSYS_CANDIDATES_REFRESH_S", 1.0, "Seconds between reads of the active index version pointer", "candidates"
)
FEATURES_TIMEOUT_MS = declare(
    "RECSYS_CANDIDATES_FEATURES_TIMEOUT_MS",
    10.0,
    "Deadline of the feature-service calls when a request carries no features (then cold start)",
    "candidates",
)
COLD_START_ANN_SHARE = declare(
    "RECSYS_CANDIDATES_COLD_START_ANN_SHARE",
    0.5,
    "Share of a cold-start user's list taken from ANN; segment popularity fills the rest",
    "candidates",
)
BREAKER_COOLDOWN_S = declare(
    "RECSYS_CANDIDATES_BREAKER_COOLDOWN_S",
    1.0,
    "After repeated Milvus or feature-service failures, skip the dependency this long before probing again",
    "candidates",
)
CATALOG_WRITER = declare(
    "RECSYS_CATALOG_WRITER",
    "child",
    "Where the candidate service embeds and writes catalogue changes into Milvus: child (a process of its own at "
    "RECSYS_CATALOG_WRITER_NICE, so that a burst does not hold the serving threads' GIL) or inline (a thread)",
    "candidates",
)
CATALOG_WRITER_NICE = declare(
    "RECSYS_CATALOG_WRITER_NICE", 10, "CPU niceness (0-19) of the catalogue writer child process", "candidates"
)


def catalog_writer() -> tuple[str, int]:
    """(child | inline, niceness) of the catalogue writer; ConfigError for anything else."""
    where, nice = CATALOG_WRITER.str().strip().lower(), CATALOG_WRITER_NICE.int()
    if where not in ("child", "inline"):
        raise ConfigError(f"RECSYS_CATALOG_WRITER must be child or inline, not {where!r}")
    if not 0 <= nice <= 19:
        raise ConfigError(f"RECSYS_CATALOG_WRITER_NICE must be 0-19, not {nice}")
    return where, nice


def milvus_uri() -> str:
    """The configured Milvus URI; empty means the embedded Milvus Lite file under the var folder."""
    uri = MILVUS_URI.str().strip()
    return uri or str(Path(config.VAR_DIR.str()) / "milvus" / "recsys.db")


def parse_params(text: str, what: str) -> dict:
    """A JSON object from configuration (index or search params); ConfigError naming `what` otherwise."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object")
    return value


@dataclass(frozen=True)
class MilvusTarget:
    """Where Milvus is: a URI (Lite file or server) and an optional token."""

    uri: str
    token: str = ""

    @property
    def is_lite(self) -> bool:
        return lite.is_lite_uri(self.uri)

    @classmethod
    def from_env(cls) -> MilvusTarget:
        return cls(uri=milvus_uri(), token=MILVUS_TOKEN.str())

    def describe(self) -> str:
        return f"milvus-lite {self.uri}" if self.is_lite else f"milvus server {self.uri}"


@dataclass
class IndexSettings:
    """How `recsys index` builds a collection."""

    index_type: str = "FLAT"
    index_params: dict | None = None
    insert_batch: int = 5000
    keep_versions: int = 2
    load_timeout_s: float = 1800.0  # index build + load

    @classmethod
    def from_env(cls) -> IndexSettings:
        return cls(
            index_type=INDEX_TYPE.str(),
            index_params=parse_params(INDEX_PARAMS.str(), INDEX_PARAMS.name),
            insert_batch=INSERT_BATCH.int(),
            keep_versions=KEEP_VERSIONS.int(),
        )


@dataclass
class RetrievalSettings:
    """Limits and deadlines of Retrieve / SimilarItems."""

    max_k: int = 1000
    max_exclude: int = 10000
    search_timeout_s: float = 0.05
    cold_start_ann_share: float = 0.5
    search_params: dict | None = None
    exclude_recent: bool = True
    search_batch: int = 8

    @classmethod
    def from_env(cls) -> RetrievalSettings:
        return cls(
            max_k=MAX_K.int(),
            max_exclude=MAX_EXCLUDE.int(),
            search_timeout_s=SEARCH_TIMEOUT_MS.float() / 1000.0,
            cold_start_ann_share=COLD_START_ANN_SHARE.float(),
            search_params=parse_params(SEARCH_PARAMS.str(), SEARCH_PARAMS.name),
            search_batch=SEARCH_BATCH.int(),
        )


@dataclass
class CandidateSettings:
    """Everything the candidate service reads from the environment, in sections."""

    port: int = 50053
    models_dir: str = "var/models"
    collection: str = "items"
    refresh_s: float = 1.0
    features_addr: str = ""
    features_timeout_s: float = 0.01
    breaker_cooldown_s: float = 1.0
    milvus: MilvusTarget = field(default_factory=lambda: MilvusTarget(uri=""))
    index: IndexSettings = field(default_factory=IndexSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)

    @classmethod
    def from_env(cls) -> CandidateSettings:
        return cls(
            port=PORT.int(),
            models_dir=MODELS_DIR.str(),
            collection=MILVUS_COLLECTION.str(),
            refresh_s=REFRESH_S.float(),
            features_addr=FEATURES_ADDR.str(),
            features_timeout_s=FEATURES_TIMEOUT_MS.float() / 1000.0,
            breaker_cooldown_s=BREAKER_COOLDOWN_S.float(),
            milvus=MilvusTarget.from_env(),
            index=IndexSettings.from_env(),
            retrieval=RetrievalSettings.from_env(),
        )
