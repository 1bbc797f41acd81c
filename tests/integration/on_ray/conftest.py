"""The tests of the Ray paths (Ray Train fits, Ray Data features and batch inference) share one local Ray with
2 CPUs, started once for this folder: `ray_for` inside a test (and the CLI under test) finds it initialised and
uses it as it is, instead of paying a Ray start (~6 s here) per test."""

from __future__ import annotations

import pytest

from recsys.training.ray_cluster import ray_for


@pytest.fixture(scope="package", autouse=True)
def local_ray():
    with ray_for(None, 2):
        yield
