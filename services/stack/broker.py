"""A private local Kafka broker for benchmarks and e2e tests, run by deploy/local/kafka.sh on free ports."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.common.ports import free_port

KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "kafka.sh"


class LocalBroker:
    """start/stop of one broker whose state lives in state_dir; stopped by the PID in its pidfile."""

    def __init__(self, state_dir: Path) -> None:
        self.port = free_port()
        self.env = {
            "KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(free_port()),
            "KAFKA_STATE_DIR": str(state_dir), "KAFKA_WATCH_PID": str(os.getpid()),
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, command: str) -> None:
        """deploy/local/kafka.sh start|stop|status for this broker; raises with its output on failure."""
        done = subprocess.run(["bash", str(KAFKA_SH), command], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {command} failed:\n{done.stdout}\n{done.stderr}")


@contextmanager
def local_broker(state_dir: Path) -> Iterator[LocalBroker]:
    broker = LocalBroker(state_dir)
    broker.run("start")
    try:
        yield broker
    finally:
        broker.run("stop")
