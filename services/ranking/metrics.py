"""Prometheus metrics of the ranking replicas, exported through Ray's metrics agent.

Ray Serve's proxy already exports per-request gRPC metrics (`ray_serve_num_grpc_requests_total`,
`ray_serve_grpc_request_latency_ms`, `ray_serve_num_grpc_error_requests_total` by status code). These add
what only the replica knows: the model and version that answered, model time and batch sizes. All of them
are served on the node's Ray metrics export port (`RECSYS_METRICS_PORT` for the local Ray), the port
Prometheus scrapes on a KubeRay cluster too.
"""

from __future__ import annotations

from ray.util import metrics

_LATENCY_MS = [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1000]


class RankingMetrics:
    """Created inside each replica (Ray metrics must be created in the process that records them)."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "recsys_ranking_requests_total",
            description="Rank/ListModels requests answered by a replica, by model, version and status code",
            tag_keys=("method", "model", "version", "code"),
        )
        self.latency_ms = metrics.Histogram(
            "recsys_ranking_latency_ms",
            description="Replica time of one request (validation, feature fetch, batching wait, model)",
            boundaries=_LATENCY_MS,
            tag_keys=("method", "model"),
        )
        self.model_ms = metrics.Histogram(
            "recsys_ranking_model_ms",
            description="Model time of one scored batch",
            boundaries=_LATENCY_MS,
            tag_keys=("model",),
        )
        self.batch_requests = metrics.Histogram(
            "recsys_ranking_batch_requests",
            description="Requests scored together in one batch",
            boundaries=[*range(1, 17), 24, 32, 64],  # one bucket per size up to 16: exact means from buckets
            tag_keys=("model",),
        )
        self.candidates = metrics.Histogram(
            "recsys_ranking_candidates",
            description="Candidates per Rank request",
            boundaries=[1, 10, 50, 100, 200, 300, 500, 1000, 2000],
        )
        self.feature_fetches = metrics.Counter(
            "recsys_ranking_feature_fetches_total",
            description="Requests whose user or item features were fetched from the feature service",
            tag_keys=("kind",),
        )

    def request(self, method: str, model: str, version: str, code: str, ms: float) -> None:
        self.requests.inc(tags={"method": method, "model": model, "version": version, "code": code})
        self.latency_ms.observe(ms, tags={"method": method, "model": model})

    def batch(self, model: str, n_requests: int, ms: float) -> None:
        self.batch_requests.observe(n_requests, tags={"model": model})
        self.model_ms.observe(ms, tags={"model": model})
