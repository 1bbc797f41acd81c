"""The Ray a training or batch job runs on: the cluster at an address, or a local one started for the call."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ray_for(address: str | None, cpus: int) -> Iterator[None]:
    """Ray inside the block: joined at `address` ("auto" in a RayJob), else a local Ray with `cpus` CPUs in its own
    temp folder, stopped after. An already initialised Ray is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    temp = None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        temp = tempfile.mkdtemp(prefix="recsys-ray-")
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=temp,
                 _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
