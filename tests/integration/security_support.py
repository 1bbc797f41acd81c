"""Helpers of the security and fuzz tests: a real gateway GrpcServer in this process whose backends point at
closed ports (so every Recommend degrades to the popular list), certificates from deploy/local/certs.sh, and
the environment switches of the bootstrap (TLS, auth, rate limits)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from recsys.common.server import GrpcServer
from recsys.gateway.events import AsyncPublisher, SyncProducer
from recsys.gateway.experiments import Experiment
from recsys.gateway.fallbacks import BatchLists, PopularItems
from recsys.gateway.hops import Backends
from recsys.gateway.pipeline import Recommender
from recsys.gateway.server import create_server
from recsys.gateway.service import EventService, RecommendService
from recsys.gateway.settings import GatewaySettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "local"
GENRES = ("drama", "comedy", "action", "horror")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certs(out: Path, ca_name: str = "recsys test CA") -> Path:
    """A CA plus server and client certificates in `out`, made by deploy/local/certs.sh."""
    done = subprocess.run([str(DEPLOY / "certs.sh"), "--out", str(out), "--ca-name", ca_name],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"certs.sh failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return out


def popular_items(n: int = 60) -> PopularItems:
    ranked = [(f"i{i}", float(n - i)) for i in range(n)]
    genres = {f"i{i}": frozenset({GENRES[i % len(GENRES)]}) for i in range(n)}
    return PopularItems(ranked, genres)


def gateway_settings(**overrides) -> GatewaySettings:
    """Settings of a gateway on a free port whose backends are all unreachable."""
    dead = [f"127.0.0.1:{closed_port()}" for _ in range(3)]
    base = replace(GatewaySettings.from_env(), port=0, features_addr=dead[0], candidates_addr=dead[1],
                   ranking_addr=dead[2], experiments_json="", batch_recs_path="", prediction_sample=0.0)
    return replace(base, **overrides)


@dataclass
class Gateway:
    server: GrpcServer
    publisher: AsyncPublisher
    producer: SyncProducer
    backends: Backends

    @property
    def address(self) -> str:
        return self.server.address


@contextmanager
def running_gateway(kafka_bootstrap: str | None = None, **overrides) -> Iterator[Gateway]:
    """A started gateway (create_server: the bootstrap reads RECSYS_TLS_* / RECSYS_AUTH_* / the rate limits from
    the environment as in production), stopped at the end. Without `kafka_bootstrap` Kafka is a closed port."""
    settings = gateway_settings(**overrides)
    bootstrap = kafka_bootstrap or f"127.0.0.1:{closed_port()}"
    backends = Backends(
        settings.features_addr, settings.candidates_addr, settings.ranking_addr, settings.ranking_app,
        settings.ranking_direct_addr,
    )
    publisher = AsyncPublisher(bootstrap, 1000)
    producer = SyncProducer(bootstrap)
    recommender = Recommender(settings, backends, Experiment.from_json(""), popular_items(), BatchLists({}))
    server = create_server(settings, RecommendService(recommender, publisher, settings), EventService(producer))
    server.start(metrics=False)
    try:
        yield Gateway(server, publisher, producer, backends)
    finally:
        server.stop(0)
        if kafka_bootstrap:
            publisher.close(timeout_s=0.5)
        else:  # its thread may be inside a 2 s connection attempt to the closed port: do not wait for it
            threading.Thread(target=publisher.close, kwargs={"timeout_s": 0}, daemon=True).start()
        producer.close()
        backends.close()


@dataclass
class SecureKafka:
    """A private broker with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL (SCRAM-SHA-512) listeners."""

    plaintext: str
    sasl_plaintext: str
    sasl_ssl: str
    ca_file: Path
    username: str
    password: str


@contextmanager
def secure_kafka(state: Path, username: str = "recsys", password: str = "recsys-test-secret") -> Iterator[SecureKafka]:
    """Start deploy/local/kafka.sh with SASL listeners on free ports in `state`; stop it (by its pidfile) after."""
    ports = set()
    while len(ports) < 4:
        ports.add(closed_port())
    port, controller, sasl, ssl = sorted(ports)
    args = ["--port", str(port), "--controller-port", str(controller), "--sasl-port", str(sasl), "--ssl-port",
            str(ssl), "--state-dir", str(state / "kafka"), "--tls-dir", str(state / "tls"),
            "--scram-users", f"{username}={password}", "--watch-pid", str(os.getpid())]
    script = str(DEPLOY / "kafka.sh")
    try:
        started = subprocess.run([script, "start", *args], capture_output=True, text=True, timeout=300)
        if started.returncode != 0:
            pytest.fail(f"kafka.sh start failed:\n{started.stdout}\n{started.stderr}", pytrace=False)
        yield SecureKafka(f"127.0.0.1:{port}", f"127.0.0.1:{sasl}", f"127.0.0.1:{ssl}", state / "tls" / "ca.crt",
                          username, password)
    finally:
        try:
            subprocess.run([script, "stop", *args], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            pass
        pidfile = state / "kafka" / "kafka.pid"
        if pidfile.exists():  # the stop script failed: last resort
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
