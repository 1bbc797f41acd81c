from recsys.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureMatrix(_message.Message):
    __slots__ = ("names", "entity_ids", "found", "values")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    found: _containers.RepeatedScalarFieldContainer[bool]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, names: _Optional[_Iterable[str]] = ..., entity_ids: _Optional[_Iterable[str]] = ..., found: _Optional[_Iterable[bool]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class GetUserFeaturesRequest(_message.Message):
    __slots__ = ("user_id", "feature_names", "recent_limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    RECENT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    recent_limit: int
    def __init__(self, user_id: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., recent_limit: _Optional[int] = ...) -> None: ...

class GetUserFeaturesResponse(_message.Message):
    __slots__ = ("features", "recent_item_ids", "recent_found")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FOUND_FIELD_NUMBER: _ClassVar[int]
    features: FeatureMatrix
    recent_item_ids: _containers.RepeatedScalarFieldContainer[str]
    recent_found: bool
    def __init__(self, features: _Optional[_Union[FeatureMatrix, _Mapping]] = ..., recent_item_ids: _Optional[_Iterable[str]] = ..., recent_found: _Optional[bool] = ...) -> None: ...

class GetItemFeaturesRequest(_message.Message):
    __slots__ = ("item_ids", "feature_names")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetItemFeaturesResponse(_message.Message):
    __slots__ = ("features",)
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    features: FeatureMatrix
    def __init__(self, features: _Optional[_Union[FeatureMatrix, _Mapping]] = ...) -> None: ...

class GetRecentItemsRequest(_message.Message):
    __slots__ = ("user_id", "limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    limit: int
    def __init__(self, user_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class GetRecentItemsResponse(_message.Message):
    __slots__ = ("item_ids", "found")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    found: bool
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., found: _Optional[bool] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_events_pb2.Event]
    def __init__(self, events: _Optional[_Iterable[_Union[_events_pb2.Event, _Mapping]]] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("applied", "duplicates")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    applied: int
    duplicates: int
    def __init__(self, applied: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...
