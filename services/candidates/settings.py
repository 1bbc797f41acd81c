"""Environment configuration of the candidate service and the `recsys index` job (declared once, here)."""

from __future__ import annotations

from pathlib import Path

from recsys.common import config
from recsys.common.config import declare

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


def milvus_uri() -> str:
    """The configured Milvus URI; empty means the embedded Milvus Lite file under the var folder."""
    uri = MILVUS_URI.str().strip()
    return uri or str(Path(config.VAR_DIR.str()) / "milvus" / "recsys.db")
