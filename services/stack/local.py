"""The local stack: every service as its own process on 127.0.0.1, with embedded defaults
(Milvus Lite, the SQLite online store, a local Ray, the local Kafka)."""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from recsys.common import config
from recsys.common.clients import channel
from recsys.common.healthcheck import check
from recsys.common.ports import free_port, free_port_block
from recsys.gateway.settings import MAX_FULL_PATH, RANKING_DIRECT_ADDR
from recsys.monitoring.settings import DASHBOARD_PORT as DASHBOARD_PORT_VAR
from recsys.monitoring.settings import DASHBOARD_TARGETS
from recsys.ranking.settings import DIRECT_PORTS
from recsys.stack.supervisor import ServiceSpec, Supervisor
from recsys.v1 import (
    candidates_pb2,
    features_pb2,
    monitoring_pb2,
    ranking_pb2,
    ranking_pb2_grpc,
    recommend_pb2,
)

SERVICES = ("features", "candidates", "ranking", "monitoring", "gateway")
# Ports per ranking instance for its replicas' own gRPC ingress (Ray Serve direct ingress): up to this many
# replicas per instance are reached without the Serve proxy's hop; more go through the proxy.
DIRECT_PORTS_PER_INSTANCE = 4
# Background workers without a gRPC port: the Kafka -> Feast streaming updater, the Kafka -> Parquet event log.
WORKERS = {"features-consumer": ["features", "consume"], "eventlog": ["eventlog", "run"]}
# Fixed ports: each process's /metrics from here on, in process order; the monitoring dashboard's HTTP port.
METRICS_PORT_BASE = 59101
DASHBOARD_PORT = 50080


@dataclass
class StackConfig:
    """Ports, folders and the broker of one local stack."""

    var_dir: Path
    models_dir: Path
    kafka_bootstrap: str
    ports: dict[str, int]
    extra_env: dict[str, str] | None = None
    #: first port of each ranking instance's direct-ingress block (DIRECT_PORTS_PER_INSTANCE ports)
    direct_ports: dict[str, int] | None = None
    #: each process's Prometheus /metrics port (services, ranking instances and workers), and the dashboard's
    metrics_ports: dict[str, int] | None = None
    dashboard_port: int = 0

    @classmethod
    def default(
        cls, var_dir: Path, kafka_bootstrap: str, fixed_ports: bool = True, ranking_instances: int | None = None
    ) -> StackConfig:
        """Fixed ports 50051-50055 (further ranking instances on 50064, 50074, ...; each instance's replicas on
        its port + 100 to + 103) or free ones; ranking_instances defaults to RECSYS_RANKING_INSTANCES."""
        base = {"gateway": 50051, "features": 50052, "candidates": 50053, "ranking": 50054, "monitoring": 50055}
        count = config.RANKING_INSTANCES.int() if ranking_instances is None else ranking_instances
        for n in range(2, max(1, count) + 1):
            base[instance_name("ranking", n)] = 50054 + 10 * (n - 1)
        ports = base if fixed_ports else {name: free_port() for name in base}
        rankers = [name for name in base if name.startswith("ranking")]
        direct = (
            {name: base[name] + 100 for name in rankers}
            if fixed_ports
            else {name: free_port_block(DIRECT_PORTS_PER_INSTANCE) for name in rankers}
        )
        processes = [*base, *WORKERS]
        metrics = (
            {name: METRICS_PORT_BASE + i for i, name in enumerate(processes)}
            if fixed_ports
            else {name: free_port() for name in processes}
        )
        return cls(var_dir, var_dir / "models", kafka_bootstrap, ports, direct_ports=direct, metrics_ports=metrics,
                   dashboard_port=DASHBOARD_PORT if fixed_ports else free_port())

    def address(self, name: str) -> str:
        """The address of one process (a service, or one instance such as "ranking-2")."""
        return f"127.0.0.1:{self.ports[name]}"

    def metrics_env(self, name: str) -> dict[str, str]:
        """The process's own /metrics port setting (none when the stack assigns no metrics ports)."""
        return {config.METRICS_PORT.name: str(self.metrics_ports[name])} if self.metrics_ports else {}

    def metrics_targets(self) -> dict[str, str]:
        """Every process's /metrics address by process name (what Prometheus and the dashboard scrape)."""
        return {name: f"127.0.0.1:{port}" for name, port in (self.metrics_ports or {}).items()}

    @property
    def dashboard_url(self) -> str:
        """The monitoring service's dashboard ("" when the stack has none)."""
        return f"http://127.0.0.1:{self.dashboard_port}/" if self.dashboard_port else ""

    def instances(self, service: str) -> list[str]:
        """The process names of a service: "ranking", then "ranking-2", ... when configured."""
        return [name for name in self.ports if name == service or name.startswith(f"{service}-")]

    def direct_ports_of(self, name: str) -> str:
        """A ranking instance's RECSYS_RANKING_DIRECT_PORTS ("" when it has none)."""
        first = (self.direct_ports or {}).get(name)
        return f"{first}-{first + DIRECT_PORTS_PER_INSTANCE - 1}" if first else ""

    def ranking_direct_address(self) -> str:
        """Every ranking replica port of the stack, as the gateway's RECSYS_RANKING_DIRECT_ADDR."""
        firsts = [(self.direct_ports or {}).get(name) for name in self.instances("ranking")]
        return ",".join(
            f"127.0.0.1:{first + n}" for first in firsts if first for n in range(DIRECT_PORTS_PER_INSTANCE)
        )

    def service_address(self, service: str) -> str:
        """What callers dial: the one address, or the comma-separated list of the service's instances."""
        return ",".join(self.address(name) for name in self.instances(service))

    def env(self) -> dict[str, str]:
        """The environment every service process gets."""
        env = {
            "RECSYS_VAR_DIR": str(self.var_dir),
            "RECSYS_MODELS_DIR": str(self.models_dir),
            "RECSYS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "RECSYS_BIND_HOST": "127.0.0.1",
            "RECSYS_FEATURES_ADDR": self.address("features"),
            "RECSYS_CANDIDATES_ADDR": self.address("candidates"),
            "RECSYS_RANKING_ADDR": self.service_address("ranking"),
            RANKING_DIRECT_ADDR.name: self.ranking_direct_address(),
            DIRECT_PORTS.name: self.direct_ports_of("ranking"),
            "RECSYS_MONITORING_ADDR": self.address("monitoring"),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        for name in SERVICES:
            env[f"RECSYS_{name.upper()}_PORT"] = str(self.ports[name])
        if self.metrics_ports:
            env[DASHBOARD_TARGETS.name] = ",".join(f"{n}={a}" for n, a in self.metrics_targets().items())
        if self.dashboard_port:
            env[DASHBOARD_PORT_VAR.name] = str(self.dashboard_port)
        if not os.environ.get(MAX_FULL_PATH.name):  # every service shares this machine's cores: cap the gateway
            env[MAX_FULL_PATH.name] = str(local_full_path_limit())
        env.update(self.extra_env or {})
        return env


def local_full_path_limit(cpus: int | None = None) -> int:
    """The ceiling of full-path requests at once when every service shares this machine's cores: four per core.
    Within it the gateway's adaptive admission finds what the backends sustain (a fixed cores + 2, the value
    before, was right on one 2-core machine and far too many on a slower one: 99% of answers degraded at
    concurrency 8)."""
    return 4 * (cpus or os.cpu_count() or 1)


def instance_name(service: str, n: int) -> str:
    """The process name of a service's n-th instance (1: the service's own name)."""
    return service if n == 1 else f"{service}-{n}"


def _instance_env(cfg: StackConfig, service: str, name: str) -> dict[str, str]:
    """What differs for a further instance: its port and, for ranking, its own Ray folder."""
    env = cfg.metrics_env(name)
    if name == service:
        return env
    env[f"RECSYS_{service.upper()}_PORT"] = str(cfg.ports[name])
    if service == "ranking":
        env[DIRECT_PORTS.name] = cfg.direct_ports_of(name)
        env["RECSYS_RAY_TEMP_DIR"] = str(cfg.var_dir / f"ray-{name.rsplit('-', 1)[1]}")
    return env


# The gRPC service each process must report SERVING for: asking for it by name, not the server-wide "",
# proves the port is held by that service and not by some other server that happens to answer there.
HEALTH_SERVICE = {
    "features": features_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
    "candidates": candidates_pb2.DESCRIPTOR.services_by_name["CandidateService"].full_name,
    "monitoring": monitoring_pb2.DESCRIPTOR.services_by_name["MonitoringService"].full_name,
    "gateway": recommend_pb2.DESCRIPTOR.services_by_name["RecommendService"].full_name,
}


def grpc_ready(service: str, address: str) -> bool:
    """True once the process at address reports service's own gRPC service SERVING."""
    return check(address, service=HEALTH_SERVICE[service], timeout_s=1.0)[0]


def ranking_ready(address: str) -> bool:
    """True once the ranking instance at address serves at least one model."""
    with channel(address) as ch:
        stub = ranking_pb2_grpc.RankingServiceStub(ch)
        try:
            reply = stub.ListModels(ranking_pb2.ListModelsRequest(), timeout=2.0,
                                    metadata=(("application", "ranking"),))
        except grpc.RpcError:
            return False
    return len(reply.models) > 0


def service_specs(cfg: StackConfig) -> list[ServiceSpec]:
    """How to start and probe each service, in start order (callees before the gateway)."""
    env = cfg.env()
    specs = []
    for service in SERVICES:
        for name in cfg.instances(service):
            address = cfg.address(name)
            ready = ranking_ready if service == "ranking" else functools.partial(grpc_ready, service)
            specs.append(ServiceSpec(
                name=name,
                argv=[sys.executable, "-m", f"recsys.{service}"],  # the image's and the chart's entry
                env={**env, **_instance_env(cfg, service, name)},
                ready=lambda a=address, ready=ready: ready(a),
                ready_timeout_s=180.0 if service == "ranking" else 120.0,
            ))
    for name, args in WORKERS.items():
        specs.append(ServiceSpec(name=name, argv=[sys.executable, "-m", "recsys.cli", *args],
                                 env={**env, **cfg.metrics_env(name)}))
    return specs


def start_stack(cfg: StackConfig, watch: bool = True) -> Supervisor:
    """Start every service and wait until each is ready; on failure stop what was started."""
    supervisor = Supervisor(cfg.var_dir / "logs", restart=watch)
    try:
        specs = service_specs(cfg)
        for spec in specs:  # the callees first, in parallel
            if spec.name != "gateway":
                supervisor.start(spec, wait=False)
        for spec in specs:
            if spec.name != "gateway":
                supervisor.wait_ready(spec.name)
        supervisor.start(next(s for s in specs if s.name == "gateway"))  # then the gateway, once they answer
    except BaseException:
        supervisor.stop()
        raise
    supervisor.watch()
    return supervisor
