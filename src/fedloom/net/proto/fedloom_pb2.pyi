from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "compression")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    compression: str
    def __init__(self, dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., compression: _Optional[str] = ...) -> None: ...

class Compressed(_message.Message):
    __slots__ = ("kind", "size", "parts")
    class PartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    size: int
    parts: _containers.ScalarMap[str, bytes]
    def __init__(self, kind: _Optional[str] = ..., size: _Optional[int] = ..., parts: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class Portable(_message.Message):
    __slots__ = ("name", "numbers", "tensors")
    class NumbersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TensorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    numbers: _containers.ScalarMap[str, float]
    tensors: _containers.MessageMap[str, Tensor]
    def __init__(self, name: _Optional[str] = ..., numbers: _Optional[_Mapping[str, float]] = ..., tensors: _Optional[_Mapping[str, Tensor]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("client_id", "num_examples")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    num_examples: int
    def __init__(self, client_id: _Optional[str] = ..., num_examples: _Optional[int] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("message", "run_id")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    message: str
    run_id: str
    def __init__(self, message: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "round", "retry_after_s", "params", "buffers", "shared", "seed", "epochs", "steps", "message", "local", "program", "update_compression", "client_terms", "compressed_params")
    class SharedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    BUFFERS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_TERMS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_PARAMS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    round: int
    retry_after_s: float
    params: Tensor
    buffers: Tensor
    shared: _containers.MessageMap[str, Tensor]
    seed: int
    epochs: int
    steps: int
    message: str
    local: LocalSettings
    program: Program
    update_compression: str
    client_terms: _containers.RepeatedCompositeFieldContainer[Portable]
    compressed_params: Compressed
    def __init__(self, kind: _Optional[str] = ..., round: _Optional[int] = ..., retry_after_s: _Optional[float] = ..., params: _Optional[_Union[Tensor, _Mapping]] = ..., buffers: _Optional[_Union[Tensor, _Mapping]] = ..., shared: _Optional[_Mapping[str, Tensor]] = ..., seed: _Optional[int] = ..., epochs: _Optional[int] = ..., steps: _Optional[int] = ..., message: _Optional[str] = ..., local: _Optional[_Union[LocalSettings, _Mapping]] = ..., program: _Optional[_Union[Program, _Mapping]] = ..., update_compression: _Optional[str] = ..., client_terms: _Optional[_Iterable[_Union[Portable, _Mapping]]] = ..., compressed_params: _Optional[_Union[Compressed, _Mapping]] = ...) -> None: ...

class Program(_message.Message):
    __slots__ = ("statistics", "terms", "state", "update_transforms", "personal", "upload_compression", "download_compression", "error_feedback")
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    PERSONAL_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    statistics: _containers.RepeatedScalarFieldContainer[str]
    terms: _containers.RepeatedCompositeFieldContainer[Portable]
    state: Portable
    update_transforms: _containers.RepeatedCompositeFieldContainer[Portable]
    personal: _containers.RepeatedCompositeFieldContainer[Portable]
    upload_compression: Portable
    download_compression: Portable
    error_feedback: bool
    def __init__(self, statistics: _Optional[_Iterable[str]] = ..., terms: _Optional[_Iterable[_Union[Portable, _Mapping]]] = ..., state: _Optional[_Union[Portable, _Mapping]] = ..., update_transforms: _Optional[_Iterable[_Union[Portable, _Mapping]]] = ..., personal: _Optional[_Iterable[_Union[Portable, _Mapping]]] = ..., upload_compression: _Optional[_Union[Portable, _Mapping]] = ..., download_compression: _Optional[_Union[Portable, _Mapping]] = ..., error_feedback: _Optional[bool] = ...) -> None: ...

class LocalSettings(_message.Message):
    __slots__ = ("epochs", "steps", "batch_size", "lr", "momentum", "weight_decay")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    steps: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    def __init__(self, epochs: _Optional[int] = ..., steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., momentum: _Optional[float] = ..., weight_decay: _Optional[float] = ...) -> None: ...

class Update(_message.Message):
    __slots__ = ("client_id", "round", "update", "buffers", "num_examples", "num_steps", "num_example_passes", "train_loss", "statistics", "compute_s", "state_report", "update_transforms", "compressed_update")
    class StatisticsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class StateReportEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    BUFFERS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLE_PASSES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_S_FIELD_NUMBER: _ClassVar[int]
    STATE_REPORT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_UPDATE_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    round: int
    update: Tensor
    buffers: Tensor
    num_examples: int
    num_steps: int
    num_example_passes: int
    train_loss: float
    statistics: _containers.ScalarMap[str, float]
    compute_s: float
    state_report: _containers.MessageMap[str, Tensor]
    update_transforms: _containers.RepeatedScalarFieldContainer[str]
    compressed_update: Compressed
    def __init__(self, client_id: _Optional[str] = ..., round: _Optional[int] = ..., update: _Optional[_Union[Tensor, _Mapping]] = ..., buffers: _Optional[_Union[Tensor, _Mapping]] = ..., num_examples: _Optional[int] = ..., num_steps: _Optional[int] = ..., num_example_passes: _Optional[int] = ..., train_loss: _Optional[float] = ..., statistics: _Optional[_Mapping[str, float]] = ..., compute_s: _Optional[float] = ..., state_report: _Optional[_Mapping[str, Tensor]] = ..., update_transforms: _Optional[_Iterable[str]] = ..., compressed_update: _Optional[_Union[Compressed, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
