"""The whole stack for e2e tests: a private Kafka, a small synthetic dataset, trained models, materialized
features, a Milvus Lite index, and every service as its own supervised process on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pytest

from recsys.stack.broker import LocalBroker
from recsys.stack.demo import DemoOptions, prepare
from recsys.stack.local import StackConfig, start_stack
from recsys.stack.supervisor import Supervisor


@dataclass
class Stack:
    cfg: StackConfig
    supervisor: Supervisor
    interactions: pd.DataFrame
    broker: LocalBroker
    data_dir: Path = field(default_factory=Path)

    @property
    def gateway(self) -> str:
        return self.cfg.address("gateway")

    def kafka(self, command: str) -> None:
        """deploy/local/kafka.sh start|stop for this stack's private broker."""
        self.broker.run(command)


@pytest.fixture(scope="package")  # one stack for tests/e2e, stopped before the integration tests run
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("e2e")
    broker = LocalBroker(var / "kafka")
    cfg = replace(StackConfig.default(var, broker.bootstrap, fixed_ports=False, ranking_instances=1),
                  extra_env={"RECSYS_GATEWAY_PREDICTION_SAMPLE": "1.0",
                             # a drift window a minute, so the dashboard has drift to draw by the last tests
                             "RECSYS_MONITORING_DRIFT_WINDOW_S": "60", "RECSYS_MONITORING_RETRAIN_TRIGGER": "off",
                             "RECSYS_MONITORING_DASHBOARD_SCRAPE_S": "2"})
    stack = Stack(cfg, Supervisor(var / "logs"), pd.DataFrame(), broker)
    stack.kafka("start")
    try:
        opts = DemoOptions(var_dir=var, kafka_bootstrap=broker.bootstrap, users=600, items=400,
                           interactions=20_000, seed=3)
        data_dir, _ = prepare(opts, cfg)
        stack.data_dir = data_dir
        stack.interactions = pd.read_parquet(data_dir / "interactions.parquet")
        stack.supervisor = start_stack(cfg)
        yield stack
    finally:
        stack.supervisor.stop()
        stack.kafka("stop")
