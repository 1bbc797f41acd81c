"""Datasets: the in-memory `Dataset`, the synthetic generator, and loaders for MovieLens and our format."""

from recsys.training.data.loaders import load_dataset, save_dataset
from recsys.training.data.schema import DataError, Dataset, validate
from recsys.training.data.synthetic import GroundTruth, click_probability, generate

__all__ = [
    "DataError",
    "Dataset",
    "GroundTruth",
    "click_probability",
    "generate",
    "load_dataset",
    "save_dataset",
    "validate",
]
