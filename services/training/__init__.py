"""Offline jobs: datasets, fitting, evaluation, batch inference (the model contract is `recsys.model`)."""
