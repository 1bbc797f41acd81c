"""Kafka helpers on kafka-python, one module per job:

- `codec`: protobuf (de)serialisation of values and keys (encode, decode, decoder, UndecodableMessage,
  KeySerializer, ProtobufSerializer, MESSAGE_TYPES);
- `clients`: client settings with security (servers, security_config, client_config) and the producer and
  consumer factories (make_producer, publish, make_consumer, batched_fetch);
- `admin`: the admin client and idempotent topic creation (make_admin, ensure_topics);
- `dlq`: the dead-letter path (dead_letter, DLQ_HEADERS; not named `dead_letter`, which the function
  re-exported here would shadow);
- `loop`: the at-least-once consumer loop (ConsumerLoop) and the idle bound of a consume loop (IdleClock).

Messages on every topic are serialized `recsys.v1` protobufs keyed by the UTF-8 user id, so one user's
events stay ordered within a partition. Every client made here gets the security settings of
RECSYS_KAFKA_SECURITY_PROTOCOL and friends; code that builds kafka-python clients itself should pass
`**client_config()`.

Service code imports the module it needs (`from recsys.common.kafka import codec`); the names re-exported
here serve tests, benchmarks and scripts (`from recsys.common import kafka as rk; rk.encode(...)`).
"""

from recsys.common.kafka.admin import ensure_topics, make_admin
from recsys.common.kafka.clients import (
    BATCHED_FETCH_MIN_BYTES,
    CONSUMER_METADATA_MAX_AGE_MS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    batched_fetch,
    client_config,
    make_consumer,
    make_producer,
    publish,
    security_config,
    servers,
)
from recsys.common.kafka.codec import (
    MESSAGE_TYPES,
    KeySerializer,
    ProtobufSerializer,
    UndecodableMessage,
    decode,
    decoder,
    encode,
)
from recsys.common.kafka.dlq import DLQ_HEADERS, dead_letter
from recsys.common.kafka.loop import ConsumerLoop, IdleClock

__all__ = [
    "BATCHED_FETCH_MIN_BYTES",
    "CONSUMER_METADATA_MAX_AGE_MS",
    "DLQ_HEADERS",
    "MESSAGE_TYPES",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "ConsumerLoop",
    "IdleClock",
    "KeySerializer",
    "ProtobufSerializer",
    "UndecodableMessage",
    "batched_fetch",
    "client_config",
    "decode",
    "decoder",
    "dead_letter",
    "encode",
    "ensure_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "publish",
    "security_config",
    "servers",
]
