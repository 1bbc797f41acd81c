"""recsys: a two-stage recommender platform (features, candidates, ranking, gateway, monitoring)."""

__version__ = "0.1.0"
