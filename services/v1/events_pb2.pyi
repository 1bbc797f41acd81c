from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_IMPRESSION: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_RATING: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE: _ClassVar[EventType]
    EVENT_TYPE_VIEW: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_IMPRESSION: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_RATING: EventType
EVENT_TYPE_PURCHASE: EventType
EVENT_TYPE_VIEW: EventType

class Event(_message.Message):
    __slots__ = ("event_id", "type", "user_id", "item_id", "request_id", "position", "model", "variant", "timestamp_ms", "value")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    type: EventType
    user_id: str
    item_id: str
    request_id: str
    position: int
    model: str
    variant: str
    timestamp_ms: int
    value: float
    def __init__(self, event_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., request_id: _Optional[str] = ..., position: _Optional[int] = ..., model: _Optional[str] = ..., variant: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class ImpressionItem(_message.Message):
    __slots__ = ("item_id", "position", "score", "source", "propensity")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    position: int
    score: float
    source: str
    propensity: float
    def __init__(self, item_id: _Optional[str] = ..., position: _Optional[int] = ..., score: _Optional[float] = ..., source: _Optional[str] = ..., propensity: _Optional[float] = ...) -> None: ...

class Impression(_message.Message):
    __slots__ = ("event_id", "request_id", "user_id", "variant", "model", "model_version", "timestamp_ms", "degraded", "items", "exploration", "pool_item_ids")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    POOL_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    request_id: str
    user_id: str
    variant: str
    model: str
    model_version: str
    timestamp_ms: int
    degraded: bool
    items: _containers.RepeatedCompositeFieldContainer[ImpressionItem]
    exploration: str
    pool_item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_id: _Optional[str] = ..., request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., variant: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., degraded: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[ImpressionItem, _Mapping]]] = ..., exploration: _Optional[str] = ..., pool_item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PredictionLog(_message.Message):
    __slots__ = ("request_id", "user_id", "variant", "model", "timestamp_ms", "feature_names", "features", "scores", "item_ids")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    variant: str
    model: str
    timestamp_ms: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedScalarFieldContainer[float]
    scores: _containers.RepeatedScalarFieldContainer[float]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., variant: _Optional[str] = ..., model: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[float]] = ..., scores: _Optional[_Iterable[float]] = ..., item_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
