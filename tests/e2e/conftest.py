"""The whole stack for e2e tests: a private Kafka, a small synthetic dataset, trained models, materialized
features, a Milvus Lite index, and every service as its own supervised process on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from recsys.stack.local import StackConfig, free_port, start_stack
from recsys.stack.supervisor import Supervisor

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"


@dataclass
class Stack:
    cfg: StackConfig
    supervisor: Supervisor
    interactions: pd.DataFrame
    kafka_env: dict[str, str]

    @property
    def gateway(self) -> str:
        return self.cfg.address("gateway")

    def kafka(self, command: str) -> None:
        """Run deploy/local/kafka.sh start|stop for this stack's private broker."""
        done = subprocess.run(["bash", str(KAFKA_SH), command], env={**os.environ, **self.kafka_env},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def _recsys(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "recsys.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"recsys {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("e2e")
    port = free_port()
    kafka_env = {
        "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(free_port()),
        "KAFKA_STATE_DIR": str(var / "kafka"), "KAFKA_WATCH_PID": str(os.getpid()),
    }
    cfg = StackConfig(var, var / "models", f"127.0.0.1:{port}",
                      {name: free_port() for name in ("gateway", "features", "candidates", "ranking", "monitoring")},
                      extra_env={"RECSYS_GATEWAY_PREDICTION_SAMPLE": "1.0"})
    stack = Stack(cfg, Supervisor(var / "logs"), pd.DataFrame(), kafka_env)
    stack.kafka("start")
    try:
        env = cfg.env()
        _recsys(env, "data", "generate", "--out", str(var / "data"), "--users", "600", "--items", "400",
                "--interactions", "20000", "--seed", "3", "--force")
        _recsys(env, "train", "--data", str(var / "data"), "--out", str(cfg.models_dir), "--quiet")
        _recsys(env, "materialize")
        _recsys(env, "index", "--quiet")
        stack.interactions = pd.read_parquet(var / "data" / "interactions.parquet")
        stack.supervisor = start_stack(cfg)
        yield stack
    finally:
        stack.supervisor.stop()
        stack.kafka("stop")


def port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0
