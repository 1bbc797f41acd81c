"""Offline jobs: datasets, the shared feature definition, models, evaluation, registry, batch inference."""
