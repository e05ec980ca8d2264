"""Secure aggregation with dropout recovery (issue 15), being built: so far the errors, the
fixed-point quantization into ``Z_{2^bits}`` and the checked settings.

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
from fedloom.privacy.secagg.quantize import Quantizer, max_value_bits, min_group_bits

__all__ = [
    "CohortParams",
    "MessageError",
    "ProtocolError",
    "Quantizer",
    "SecAggAborted",
    "SecAggConfig",
    "SecAggError",
    "ShareError",
    "max_value_bits",
    "min_group_bits",
    "min_threshold",
]
