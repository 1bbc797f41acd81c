"""Kafka security end to end: the local broker (deploy/local/kafka.sh) with SASL_PLAINTEXT and SASL_SSL listeners
(SCRAM-SHA-512), and the project's producer / consumer / admin factories configured only through RECSYS_KAFKA_*."""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka.errors import KafkaError

sys.path.insert(0, str(Path(__file__).parent))
from security_support import secure_kafka  # noqa: E402

from recsys.common import kafka  # noqa: E402
from recsys.v1 import events_pb2  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("java") is None or shutil.which("openssl") is None:
        pytest.skip("the secured broker needs Java 17+ and openssl")
    with secure_kafka(tmp_path_factory.mktemp("secure-kafka")) as secured:
        yield secured


def use(monkeypatch, protocol: str, broker, password: str | None = None) -> None:
    monkeypatch.setenv("RECSYS_KAFKA_SECURITY_PROTOCOL", protocol)
    monkeypatch.setenv("RECSYS_KAFKA_SASL_USERNAME", broker.username)
    monkeypatch.setenv("RECSYS_KAFKA_SASL_PASSWORD", password or broker.password)
    monkeypatch.setenv("RECSYS_KAFKA_SSL_CAFILE", str(broker.ca_file))


def round_trip(bootstrap: str) -> list[str]:
    """Create a topic, produce two events and consume them back with the project's factories."""
    topic = f"secure.{uuid.uuid4().hex[:8]}"
    kafka.ensure_topics([topic], bootstrap, partitions=1, timeout_s=20)
    producer = kafka.make_producer(bootstrap, max_block_ms=10_000)
    try:
        for item in ("i1", "i2"):
            kafka.publish(producer, topic, events_pb2.Event(user_id="u1", item_id=item)).get(timeout=10)
    finally:
        producer.close(timeout=5)
    consumer = kafka.make_consumer(f"g-{topic}", [topic], bootstrap)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen += [kafka.decode(events_pb2.Event, r.value).item_id for r in records]
    finally:
        consumer.close()
    return seen


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_round_trip_over_a_secured_listener(broker, monkeypatch, protocol):
    use(monkeypatch, protocol, broker)
    bootstrap = broker.sasl_plaintext if protocol == "SASL_PLAINTEXT" else broker.sasl_ssl
    assert kafka.security_config()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert round_trip(bootstrap) == ["i1", "i2"]


@pytest.mark.parametrize("case", ["wrong password", "no credentials", "TLS without the CA"])
def test_refused_without_valid_credentials(broker, monkeypatch, case):
    if case == "wrong password":
        use(monkeypatch, "SASL_PLAINTEXT", broker, password="not-the-password")
        bootstrap = broker.sasl_plaintext
    elif case == "no credentials":
        monkeypatch.setenv("RECSYS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
        bootstrap = broker.sasl_plaintext
    else:
        use(monkeypatch, "SASL_SSL", broker)
        monkeypatch.setenv("RECSYS_KAFKA_SSL_CAFILE", "")  # the system roots do not know the local CA
        bootstrap = broker.sasl_ssl
    started = time.monotonic()
    with pytest.raises(KafkaError):
        producer = kafka.make_producer(bootstrap, max_block_ms=3000, bootstrap_timeout_ms=3000)
        try:
            producer.send("never", value=b"x").get(timeout=5)
        finally:
            producer.close(timeout=1)
    assert time.monotonic() - started < 15
