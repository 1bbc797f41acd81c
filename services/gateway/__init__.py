"""The gateway: the public RecommendService and EventService.

features → candidates → item features → ranking → re-rank, inside a hard latency budget, degrading to
fallbacks (popular items, batch lists, unranked candidates) instead of failing.
"""
