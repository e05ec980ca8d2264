"""Secure aggregation with dropout recovery (issue 15), being built: so far the errors, the
fixed-point quantization into ``Z_{2^bits}``, the checked settings, Shamir sharing, the PRG,
the share channel, the neighbor graph and the protocol's messages.

Importing this package loads ``cryptography``; ``import fedloom`` does not import it.
"""

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
    "RevealedShare",
    "SecAggAborted",
    "SecAggConfig",
    "SecAggError",
    "ShareError",
    "ShareKeys",
    "ShareList",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "max_value_bits",
    "min_group_bits",
    "min_threshold",
]
