"""Protobuf (de)serialisation of Kafka record values and keys.

Messages on every topic are serialized `recsys.v1` protobufs keyed by the UTF-8 user id, so one user's
events stay ordered within a partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from kafka.serializer import Serializer

from recsys.v1 import catalog_pb2, events_pb2

M = TypeVar("M", bound=Message)

#: The message types that travel on Kafka, by name.
MESSAGE_TYPES: dict[str, type[Message]] = {
    "Event": events_pb2.Event,
    "Impression": events_pb2.Impression,
    "PredictionLog": events_pb2.PredictionLog,
    "ItemChange": catalog_pb2.ItemChange,
}


class UndecodableMessage(ValueError):
    """A record's value is not a valid serialized message of the expected type."""


def encode(message: Message) -> bytes:
    """Serialize a protobuf message."""
    return message.SerializeToString()


def decode(message_type: type[M], data: bytes | None) -> M:
    """Parse `data` as `message_type`; raises UndecodableMessage on a null value or corrupt bytes."""
    if data is None:
        raise UndecodableMessage(f"null value where a {message_type.DESCRIPTOR.full_name} was expected")
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise UndecodableMessage(f"not a {message_type.DESCRIPTOR.full_name}: {exc}") from exc
    return message


def decoder(message_type: type[M]) -> Callable[[bytes | None], M]:
    """A one-argument decoder for `message_type`, for ConsumerLoop."""
    return lambda data: decode(message_type, data)


class KeySerializer(Serializer):
    """str keys (user ids) as UTF-8; bytes and None pass through."""

    def serialize(self, topic, headers, data: str | bytes | None) -> bytes | None:
        return data.encode("utf-8") if isinstance(data, str) else data


class ProtobufSerializer(Serializer):
    """Protobuf messages serialized; bytes and None (tombstones, dead letters) pass through."""

    def serialize(self, topic, headers, data: Message | bytes | None) -> bytes | None:
        return encode(data) if isinstance(data, Message) else data
