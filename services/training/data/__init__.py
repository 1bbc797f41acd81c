"""Datasets: the in-memory `Dataset`, the synthetic generator, and loaders for MovieLens and our format."""

from recsys.training.data.schema import Dataset

__all__ = ["Dataset"]
