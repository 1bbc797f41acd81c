"""Gateway configuration, read once at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from recsys.common.config import (
    CANDIDATES_ADDR,
    FEATURES_ADDR,
    MODELS_DIR,
    RANKING_ADDR,
    RANKING_APP,
    declare,
)

PORT = declare("RECSYS_GATEWAY_PORT", 50051, "Gateway gRPC port (RecommendService, EventService)", "gateway")
BUDGET_MS = declare("RECSYS_GATEWAY_BUDGET_MS", 100.0, "Hard end-to-end deadline of one Recommend", "gateway")
RERANK_RESERVE_MS = declare(
    "RECSYS_GATEWAY_RERANK_RESERVE_MS", 5.0, "Budget kept back for re-ranking and the response", "gateway"
)
MAX_K = declare("RECSYS_GATEWAY_MAX_K", 100, "Largest k a caller may ask for", "gateway")
RETRIEVAL_K = declare("RECSYS_GATEWAY_RETRIEVAL_K", 300, "Candidates retrieved per request (default)", "gateway")
MAX_CONTEXT = declare("RECSYS_GATEWAY_MAX_CONTEXT_ENTRIES", 32, "Largest context map accepted", "gateway")
MAX_FILTER_IDS = declare("RECSYS_GATEWAY_MAX_FILTER_IDS", 1000, "Largest exclude list accepted", "gateway")
GENRE_CAP = declare(
    "RECSYS_GATEWAY_GENRE_CAP", 0.5, "Max share of one genre among the top k (1 = no diversity cap)", "gateway"
)
EXPERIMENTS = declare(
    "RECSYS_EXPERIMENTS",
    "",
    "A/B experiment as JSON {salt, variants:[{name, share, ranker, model_version, retrieval_k, exploration}]}; "
    "empty = control (lightgbm) 50% / dcn 50%",
    "gateway",
)
EXPLORATION = declare(
    "RECSYS_GATEWAY_EXPLORATION",
    "epsilon=0.1,pool=20",
    "Exploration of every variant but the control that sets none of its own (RECSYS_EXPERIMENTS `exploration`): "
    "epsilon=E[,pool=M] (each slot shows, with chance E, one of the M items ranked after the top k), "
    "plackett-luce,temperature=T[,pool=M], or none; each impression logs the propensities (off-policy evaluation)",
    "gateway",
)
BATCH_RECS = declare(
    "RECSYS_BATCH_RECS_PATH", "", "CSV of precomputed top-K per user (batch-recommend); a fallback source", "gateway"
)
RANKING_DIRECT_ADDR = declare(
    "RECSYS_RANKING_DIRECT_ADDR",
    "",
    "The ranking replicas' own gRPC ports (Ray Serve direct ingress, RECSYS_RANKING_DIRECT_PORTS): IP:port list or "
    "dns:/// target; Rank goes there while one is connected, else through RECSYS_RANKING_ADDR (empty = proxy only)",
    "gateway",
)
EVENT_BUFFER = declare("RECSYS_GATEWAY_EVENT_BUFFER", 10000, "Impressions buffered while Kafka is slow", "gateway")
MAX_FULL_PATH = declare(
    "RECSYS_GATEWAY_MAX_FULL_PATH",
    0,
    "Requests on the full path (features, candidates, ranking) at once per gateway; one finding no slot within "
    "RECSYS_GATEWAY_ADMISSION_WAIT_MS is answered from batch lists / popular items, degraded (0 = no limit)",
    "gateway",
)
ADMISSION_WAIT_MS = declare(
    "RECSYS_GATEWAY_ADMISSION_WAIT_MS",
    20.0,
    "Longest wait for a full-path slot before answering degraded (never past the request's budget less the full "
    "path's recent duration)",
    "gateway",
)
ADMISSION_ADAPTIVE = declare(
    "RECSYS_GATEWAY_ADMISSION_ADAPTIVE",
    True,
    "Adapt the full-path limit to what the backends sustain (AIMD between 1 and RECSYS_GATEWAY_MAX_FULL_PATH: up "
    "while full paths finish with no hop out of time, a quarter down when one runs out of time); false = the "
    "fixed RECSYS_GATEWAY_MAX_FULL_PATH",
    "gateway",
)
EVENT_INTERVAL_MS = declare(
    "RECSYS_GATEWAY_EVENT_INTERVAL_MS",
    100.0,
    "Least time between two sends of buffered impressions to Kafka: one produce request carries what came in "
    "meanwhile (kafka-python costs CPU per request, not per event; 0 = send each at once)",
    "gateway",
)
ROLLOUT_REFRESH_S = declare(
    "RECSYS_GATEWAY_ROLLOUT_REFRESH_S",
    2.0,
    "Seconds between reads of the registry's canary state (rollout.json); 0 = ignore canaries",
    "gateway",
)
PREDICTION_SAMPLE = declare(
    "RECSYS_GATEWAY_PREDICTION_SAMPLE", 0.1, "Share of requests whose features and scores go to Kafka", "gateway"
)


CATALOG_WAIT_S = declare(
    "RECSYS_GATEWAY_CATALOG_WAIT_S", 10.0,
    "At start, how long the gateway waits to have read the items changelog (deletions made before it started) "
    "before it serves", "gateway",
)


FRESH_SHARE = declare(
    "RECSYS_GATEWAY_FRESH_SHARE", 0.1,
    "Share of the k slots the FRESH source reserves for new items (upserted, unknown to the model, recently "
    "published) in variants that set no fresh_share of their own (RECSYS_EXPERIMENTS); 0 = none", "gateway",
)
FRESH_POOL = declare(
    "RECSYS_GATEWAY_FRESH_POOL", 10, "The newest new items that pass the filters and compete, by the ranker's "
    "score, for the FRESH slots", "gateway",
)
FRESH_WINDOW_S = declare(
    "RECSYS_GATEWAY_FRESH_WINDOW_S", 7 * 86_400.0, "An item counts as new this long after it was published",
    "gateway",
)


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway reads from the environment."""

    port: int
    features_addr: str
    candidates_addr: str
    ranking_addr: str
    ranking_app: str
    ranking_direct_addr: str
    budget_ms: float
    rerank_reserve_ms: float
    max_k: int
    retrieval_k: int
    max_context: int
    max_filter_ids: int
    genre_cap: float
    experiments_json: str
    models_dir: str
    batch_recs_path: str
    event_buffer: int
    event_interval_ms: float
    max_full_path: int
    admission_wait_ms: float
    prediction_sample: float
    admission_adaptive: bool = True
    rollout_refresh_s: float = 2.0
    exploration: str = ""
    catalog_wait_s: float = 10.0
    fresh_share: float = 0.1
    fresh_pool: int = 10
    fresh_window_s: float = 7 * 86_400.0

    @classmethod
    def from_env(cls) -> GatewaySettings:
        return cls(
            port=PORT.int(),
            features_addr=FEATURES_ADDR.str(),
            candidates_addr=CANDIDATES_ADDR.str(),
            ranking_addr=RANKING_ADDR.str(),
            ranking_app=RANKING_APP.str(),
            ranking_direct_addr=RANKING_DIRECT_ADDR.str(),
            budget_ms=BUDGET_MS.float(),
            rerank_reserve_ms=RERANK_RESERVE_MS.float(),
            max_k=MAX_K.int(),
            retrieval_k=RETRIEVAL_K.int(),
            max_context=MAX_CONTEXT.int(),
            max_filter_ids=MAX_FILTER_IDS.int(),
            genre_cap=GENRE_CAP.float(),
            experiments_json=EXPERIMENTS.str(),
            exploration=EXPLORATION.str(),
            models_dir=MODELS_DIR.str(),
            batch_recs_path=BATCH_RECS.str(),
            event_buffer=EVENT_BUFFER.int(),
            event_interval_ms=max(0.0, EVENT_INTERVAL_MS.float()),
            max_full_path=max(0, MAX_FULL_PATH.int()),
            admission_wait_ms=max(0.0, ADMISSION_WAIT_MS.float()),
            admission_adaptive=ADMISSION_ADAPTIVE.bool(),
            prediction_sample=PREDICTION_SAMPLE.float(),
            rollout_refresh_s=ROLLOUT_REFRESH_S.float(),
            catalog_wait_s=max(0.0, CATALOG_WAIT_S.float()),
            fresh_share=min(1.0, max(0.0, FRESH_SHARE.float())),
            fresh_pool=max(0, FRESH_POOL.int()),
            fresh_window_s=max(0.0, FRESH_WINDOW_S.float()),
        )
