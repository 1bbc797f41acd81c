"""Ranking service: DCN-v2 / LightGBM rankers on Ray Serve behind Serve's native gRPC proxy."""
