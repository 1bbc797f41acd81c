"""The feature service: Feast definitions, materialization, the gRPC FeatureService and streaming updates."""

from recsys.features import lazy_torch

lazy_torch.install()  # before anything here imports Feast
