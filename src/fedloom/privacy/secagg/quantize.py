"""Fixed-point quantization of float vectors into the group Z_{2^bits}, and back for a sum.

Masking needs a finite group: a client's update ``x`` (float) becomes integers in
``[0, 2^value_bits - 1]``; the masked vectors and their sum live in ``Z_{2^bits}``.

Encoding (one coordinate): clip to ``[-c, c]`` (``c = clip_range``), shift by ``+c`` and
divide by the step ``delta = 2c / (2^value_bits - 1)``, so ``-c -> 0`` and ``+c ->
2^value_bits - 1``; then round *stochastically*: up with probability equal to the fractional
part. The rounding is unbiased (``E[q] = (clip(x) + c) / delta`` exactly), so the decoded sum
is an unbiased estimate of the clipped sum, and each client's rounding error is below one step.

Decoding a sum of ``n`` clients: ``sum * delta - n * c`` (each client contributed the ``+c``
offset once). The integer sum is at most ``n (2^value_bits - 1)``; it must stay below
``2^bits`` or it wraps around and decodes to garbage, hence :func:`min_group_bits`.

Error bound (stated and tested): for every coordinate, ``|decoded - sum_i clip(x_i)| < n *
delta`` (each rounding moves a value by less than one step; float64 arithmetic adds at most
a few ulps while ``bits <= 53``). The errors are independent and zero-mean, so the typical
error is about ``sqrt(n) * delta / 2``.

The rounding randomness is not secret (it is derived from the run seed by
:mod:`fedloom.rng`, so runs are reproducible); it is not a privacy mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedloom.errors import ConfigError
from fedloom.privacy.secagg.errors import SecAggError

__all__ = ["MAX_BITS", "Quantizer", "max_value_bits", "min_group_bits"]

MAX_BITS = 64  # group elements live in uint64 (the sum wraps mod 2^64, then is masked)


def min_group_bits(num_clients: int, value_bits: int) -> int:
    """The fewest group bits for which a sum of ``num_clients`` quantized vectors cannot wrap.

    Each client's coordinate is at most ``2^value_bits - 1``, so the sum is at most
    ``num_clients * (2^value_bits - 1)``, which needs that many bits.

    >>> min_group_bits(20, 16)  # 20 * 65535 = 1,310,700 < 2^21
    21
    """
    if num_clients < 1 or value_bits < 1:
        raise ValueError(
            f"need num_clients >= 1 and value_bits >= 1, got {num_clients}, {value_bits}"
        )
    return (num_clients * ((1 << value_bits) - 1)).bit_length()


def max_value_bits(bits: int, num_clients: int) -> int:
    """The finest per-client precision (value bits) whose sum over ``num_clients`` fits
    ``bits`` group bits; 0 if even one bit per value would overflow."""
    value_bits = 0
    while value_bits < bits and min_group_bits(num_clients, value_bits + 1) <= bits:
        value_bits += 1
    return value_bits


@dataclass(frozen=True)
class Quantizer:
    """Fixed point on ``[-clip_range, clip_range]`` with ``2^value_bits`` levels.

    >>> import numpy as np
    >>> q = Quantizer(clip_range=1.0, value_bits=8)
    >>> x = q.quantize(np.array([-1.0, 1.0]), rng=np.random.default_rng(0))
    >>> x.tolist(), q.dequantize_sum(x, num_clients=1).tolist()
    ([0, 255], [-1.0, 1.0])
    """

    clip_range: float
    value_bits: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.clip_range) and self.clip_range > 0):
            raise ConfigError(
                f"secure_aggregation.clip_range must be a positive finite number, got "
                f"{self.clip_range!r}: updates are clipped to [-clip_range, clip_range]"
            )
        if not 1 <= self.value_bits <= MAX_BITS:
            raise ConfigError(
                f"secure_aggregation value bits must be in [1, {MAX_BITS}], got "
                f"{self.value_bits}: raise bits or lower the cohort size"
            )

    @property
    def step(self) -> float:
        """One quantization step ``delta = 2c / (2^value_bits - 1)``, in update units."""
        return 2.0 * self.clip_range / ((1 << self.value_bits) - 1)

    def error_bound(self, num_clients: int) -> float:
        """The per-coordinate bound on ``|decoded sum - clipped float sum|``: ``n * step``."""
        return num_clients * self.step

    def quantize(self, x: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        """``x`` (float, any shape, flattened) -> uint64 integers in ``[0, 2^value_bits - 1]``,
        clipped and stochastically rounded with uniforms from ``rng``."""
        values = np.asarray(x, dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(values)
        if bad.any():
            raise SecAggError(
                f"cannot quantize an update with {int(bad.sum())} non-finite coordinates "
                f"(first at index {int(np.argmax(bad))}): secure aggregation needs finite "
                "values; check the local training (learning rate, loss)"
            )
        top = float((1 << self.value_bits) - 1)
        scaled = (np.clip(values, -self.clip_range, self.clip_range) + self.clip_range) / self.step
        floor = np.floor(scaled)
        rounded = floor + (rng.random(scaled.shape) < (scaled - floor))
        return np.clip(rounded, 0.0, top).astype(np.uint64)

    def dequantize_sum(self, total: np.ndarray, *, num_clients: int) -> np.ndarray:
        """The float sum of ``num_clients`` clients' inputs from the integer sum of their
        quantized vectors (not reduced mod anything: the caller checked it cannot wrap)."""
        if num_clients < 0:
            raise ValueError(f"num_clients must be >= 0, got {num_clients}")
        ints = np.asarray(total, dtype=np.uint64)
        return ints.astype(np.float64) * self.step - num_clients * self.clip_range
