"""Secure aggregation with dropout recovery (issue 15): the protocol core of Bonawitz et al.
2017 with SecAgg+'s neighbor graph as an option, as client and server state values that
exchange byte-encoded messages; :func:`simulate_round` runs a round in memory.

Importing this package loads ``cryptography``; ``import fedloom`` does not import it.
"""

from fedloom.privacy.secagg.client import SecAggClient
from fedloom.privacy.secagg.config import CohortParams, SecAggConfig, min_threshold
from fedloom.privacy.secagg.errors import (
    MessageError,
    ProtocolError,
    SecAggAborted,
    SecAggError,
    ShareError,
)
from fedloom.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShare,
    KeyList,
    MaskedInput,
    Phase,
    RevealedShare,
    ShareKeys,
    ShareList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from fedloom.privacy.secagg.quantize import Quantizer, max_value_bits, min_group_bits
from fedloom.privacy.secagg.server import Rejection, SecAggResult, SecAggServer
from fedloom.privacy.secagg.simulate import simulate_round

__all__ = [
    "AdvertiseKeys",
    "CohortParams",
    "EncryptedShare",
    "KeyList",
    "MaskedInput",
    "MessageError",
    "Phase",
    "ProtocolError",
    "Quantizer",
    "Rejection",
    "RevealedShare",
    "SecAggAborted",
    "SecAggClient",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "SecAggServer",
    "ShareError",
    "ShareKeys",
    "ShareList",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "max_value_bits",
    "min_group_bits",
    "min_threshold",
    "simulate_round",
]
