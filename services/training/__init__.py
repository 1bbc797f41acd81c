"""Offline jobs: datasets, the shared feature definition, models, evaluation, registry, batch inference."""

import os

# OpenMP threads that spin while waiting collapse throughput when the cores are shared with other
# processes (measured: 2 torch threads ran 10x slower than 1 on a busy 2-core machine; with PASSIVE
# they match or beat 1). Must be set before torch / lightgbm load their OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
