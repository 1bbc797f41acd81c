"""Shared by the candidate-service tests: a small trained registry, a server process, Milvus Lite's child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from recsys.common.clients import insecure_channel
from recsys.common.ports import free_port
from recsys.model.bundle import save_bundle
from recsys.model.rankers.dcn import DCNConfig
from recsys.model.rankers.lightgbm import LGBMConfig
from recsys.model.registry import Registry
from recsys.training.data import generate
from recsys.training.mf import ALSConfig
from recsys.training.pipeline import TrainConfig, train_all
from recsys.training.two_tower import TwoTowerConfig


def train_registry(root: Path, versions: int = 2, n_interactions: int = 5000) -> Registry:
    """`versions` registry versions (seeds 0..) trained by the real pipeline at toy sizes; latest = v0001."""
    ds = generate(n_interactions, seed=0)
    registry = Registry(root)
    for seed in range(versions):
        cfg = TrainConfig(
            threads=1,
            two_tower=TwoTowerConfig(epochs=1, dim=16, hidden=32, batch_size=256),
            als=ALSConfig(factors=8, iterations=2),
            dcn=DCNConfig(epochs=1, deep=(32, 16)),
            lgbm=LGBMConfig(n_estimators=10, threads=1),
        ).with_seed(seed)
        bundle, _ = train_all(ds, cfg, progress=False)
        registry.create(lambda path, b=bundle: save_bundle(b, path), {"config": cfg.to_dict()}, publish=seed == 0)
    return registry


def recsys(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the `recsys` CLI in a subprocess (as an operator would)."""
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


class ServerProcess:
    """`recsys candidates serve` on a free port; stopped by PID."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = Path(env["RECSYS_VAR_DIR"]) / f"candidates-{self.port}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "recsys.cli", "candidates", "serve", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"candidate service exited: {self.log.read_text()[-3000:]}")
            with insecure_channel(self.address) as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=0.5)
                    return
                except grpc.FutureTimeoutError:
                    continue
        raise TimeoutError(f"candidate service not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def milvus_lite_child(pid: int) -> int | None:
    """The milvus-lite server process started by process `pid`, if any."""
    for child in child_pids(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"milvus_lite/lib/milvus"):
            return child
    return None


def base_env(var_dir: Path, models: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RECSYS_VAR_DIR=str(var_dir),
        RECSYS_MODELS_DIR=str(models),
        RECSYS_MILVUS_URI=str(var_dir / "milvus" / "recsys.db"),
        RECSYS_LOG_LEVEL="WARNING",
        RECSYS_METRICS_PORT="0",
        **extra,
    )
    return env
