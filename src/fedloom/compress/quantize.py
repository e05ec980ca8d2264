"""Quantizers: fewer bits per value. fp16, bf16, int (per-vector or per-block scale), QSGD.

Each is a portable frozen dataclass (it travels to deployed clients as data) with
``encode(x, seed=...) -> Code``, ``decode(code) -> [P] float32`` and ``num_bytes(P)``, the
exact length of every code for ``P`` values (see :mod:`fedloom.compress.code`).

Stated error bounds (per coordinate, for ``x`` float32; tested):

- :class:`Float16`: values are clamped to the finite range ``+-65504`` and rounded to
  nearest, so ``|x - x^| <= max(2^-11 |x|, 2^-25)`` for ``|x| <= 65504``. ``2 P`` bytes.
- :class:`BFloat16`: float32 with its mantissa rounded to 8 bits (round to nearest even):
  ``|x - x^| <= 2^-8 |x|``. ``2 P`` bytes.
- :class:`IntQuantizer`: symmetric linear quantization with one float32 scale per block,
  ``s = max_block |x| / m``, ``m = 2^(bits-1) - 1`` (127 for 8 bits), codes
  ``round(x / s)`` in ``[-m, m]``: ``|x - x^| <= s / 2`` (plus float32 rounding of the result,
  ``2^-24 |x|``). Deterministic, so biased; ``ceil(P bits / 8) + 4 ceil(P / block)`` bytes.
- :class:`QSGD` (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD via Gradient
  Quantization and Encoding", Section 3.1): per bucket ``v`` of ``block_size`` values (the
  whole vector by default) and ``s`` levels, ``Q_s(v_i) = ||v||_2 sgn(v_i) xi_i / s`` with
  ``xi_i = l + 1`` with probability ``s |v_i| / ||v|| - l`` and ``l`` otherwise,
  ``l = floor(s |v_i| / ||v||)``. Unbiased: ``E[Q_s(v)] = v`` (the norm is stored as float32
  rounded *up*, and the decoder uses that same number, so this holds exactly, not only up to
  rounding). Variance (Lemma 3.1): ``E ||Q_s(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2``
  for a bucket of ``d`` values; per coordinate ``Var(Q_s(v_i)) <= ||v||^2 / (4 s^2)``. The
  paper's Elias coding of the levels is variable-length; here every value takes a fixed
  ``1 + ceil(log2(s + 1))`` bits (sign, level), so the size is exact and known in advance:
  ``ceil(P (1 + ceil(log2(s + 1))) / 8) + 4 ceil(P / block)`` bytes. Its randomness comes from
  the client's seed for the round (``torch_generator(seed, "compress/qsgd")``), so every
  engine, and a deployed client, sends the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedloom.client.portable import portable
from fedloom.compress.code import (
    Code,
    CodeError,
    as_tensor,
    blocks_of,
    check_parts,
    float_part,
    num_blocks,
    pack_bits,
    packed_length,
    unpack_bits,
)
from fedloom.rng import torch_generator

__all__ = ["INT_BITS", "MAX_LEVELS", "QSGD", "BFloat16", "Float16", "IntQuantizer"]

INT_BITS = (2, 4, 8)
MAX_LEVELS = 2**15 - 1  # 16 bits a value at most
FP16_MAX = 65504.0
BF16_MAX = 3.3895313892515355e38


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


@portable("compress/fp16")
@dataclass(frozen=True)
class Float16:
    """IEEE half precision: 2 bytes a value (values beyond ``+-65504`` are clamped)."""

    @property
    def name(self) -> str:
        return "compress/fp16"

    def num_bytes(self, size: int) -> int:
        return 2 * size

    def encode(self, x: torch.Tensor, *, seed: int = 0) -> Code:
        values = np.clip(_numpy(x), -FP16_MAX, FP16_MAX).astype("<f2")
        return Code(self.name, x.numel(), {"values": values.tobytes()})

    def decode(self, code: Code) -> torch.Tensor:
        check_parts(code, self.name, code.size, {"values": 2 * code.size})
        values = np.frombuffer(code.parts["values"], dtype="<f2").astype(np.float32)
        if not np.isfinite(values).all():
            raise CodeError("non-finite fp16 values")
        return torch.from_numpy(values)


@portable("compress/bf16")
@dataclass(frozen=True)
class BFloat16:
    """bfloat16: float32's range with an 8-bit mantissa, 2 bytes a value."""

    @property
    def name(self) -> str:
        return "compress/bf16"

    def num_bytes(self, size: int) -> int:
        return 2 * size

    def encode(self, x: torch.Tensor, *, seed: int = 0) -> Code:
        clamped = x.detach().cpu().float().clamp(-BF16_MAX, BF16_MAX)
        bits = clamped.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2")
        return Code(self.name, x.numel(), {"values": bits.tobytes()})

    def decode(self, code: Code) -> torch.Tensor:
        check_parts(code, self.name, code.size, {"values": 2 * code.size})
        high = np.frombuffer(code.parts["values"], dtype="<u2").astype(np.uint32) << 16
        values = high.view(np.float32)
        if not np.isfinite(values).all():
            raise CodeError("non-finite bf16 values")
        return torch.from_numpy(values.copy())


def _check_block_size(block_size: int) -> None:
    if block_size < 0:
        raise ValueError(f"block_size must be >= 0 (0: one block), got {block_size}")


@portable("compress/int")
@dataclass(frozen=True)
class IntQuantizer:
    """Symmetric ``bits``-bit integers with a float32 scale per block of ``block_size``
    values (0: one scale for the whole vector): the "int8" compressor at 8 bits.

    >>> q = IntQuantizer(bits=8)
    >>> code = q.encode(torch.tensor([1.0, -0.5, 0.25, 0.0]))
    >>> code.num_bytes, q.decode(code).tolist()
    (8, [1.0, -0.5039370059967041, 0.25196850299835205, 0.0])
    """

    bits: int = 8
    block_size: int = 0

    def __post_init__(self) -> None:
        if self.bits not in INT_BITS:
            raise ValueError(f"bits must be one of {INT_BITS}, got {self.bits}")
        _check_block_size(self.block_size)

    @property
    def name(self) -> str:
        return "compress/int"

    @property
    def top(self) -> int:
        """``m = 2^(bits-1) - 1``, the largest code magnitude."""
        return 2 ** (self.bits - 1) - 1

    def num_bytes(self, size: int) -> int:
        return packed_length(size, self.bits) + 4 * num_blocks(size, self.block_size)

    def encode(self, x: torch.Tensor, *, seed: int = 0) -> Code:
        values = _numpy(x)
        size, m = values.shape[0], self.top
        blocks = blocks_of(values, self.block_size)
        scales = (np.abs(blocks).max(axis=1) / m).astype("<f4")
        divisor = np.where(scales > 0, scales.astype(np.float64), 1.0)
        q = np.clip(np.rint(blocks / divisor[:, None]), -m, m).reshape(-1)[:size]
        parts = {
            "codes": pack_bits((q + m).astype(np.int64), self.bits),
            "scales": scales.tobytes(),
        }
        return Code(self.name, size, parts)

    def decode(self, code: Code) -> torch.Tensor:
        size, m = code.size, self.top
        lengths = {
            "codes": packed_length(size, self.bits),
            "scales": 4 * num_blocks(size, self.block_size),
        }
        check_parts(code, self.name, size, lengths)
        scales = float_part(code.parts["scales"], what="int scales")
        if (scales < 0).any():
            raise CodeError("negative int scale")
        codes = unpack_bits(code.parts["codes"], self.bits, size)
        if size and codes.max() > 2 * m:
            raise CodeError(f"int code above {2 * m}")
        per_value = scales[np.arange(size) // (self.block_size or max(size, 1))]
        return as_tensor((codes - m) * per_value)


@portable("compress/qsgd")
@dataclass(frozen=True)
class QSGD:
    """QSGD's stochastic quantization to ``levels`` (``s``) levels per sign, with one norm
    per bucket of ``block_size`` values (0: the whole vector); unbiased.

    >>> code = QSGD(levels=1).encode(torch.tensor([3.0, 0.0, -4.0]), seed=0)
    >>> code.num_bytes  # 3 values x 2 bits -> 1 byte, one float32 norm
    5
    """

    levels: int = 16
    block_size: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in [1, {MAX_LEVELS}], got {self.levels}")
        _check_block_size(self.block_size)

    @property
    def name(self) -> str:
        return "compress/qsgd"

    @property
    def bits(self) -> int:
        """Bits a value: one for the sign, ``ceil(log2(s + 1))`` for the level."""
        return 1 + math.ceil(math.log2(self.levels + 1))

    def num_bytes(self, size: int) -> int:
        return packed_length(size, self.bits) + 4 * num_blocks(size, self.block_size)

    def encode(self, x: torch.Tensor, *, seed: int) -> Code:
        values = _numpy(x)
        size, s = values.shape[0], self.levels
        blocks = blocks_of(values, self.block_size)
        exact = np.sqrt((blocks * blocks).sum(axis=1))
        norms = exact.astype(np.float32)
        low = norms.astype(np.float64) < exact  # round up, so that s |v_i| / norm <= s
        norms[low] = np.nextafter(norms[low], np.float32(np.inf))
        norms = norms.astype("<f4")
        divisor = np.where(norms > 0, norms.astype(np.float64), 1.0)
        ratio = np.minimum(np.abs(blocks) / divisor[:, None] * s, s).reshape(-1)[:size]
        floor = np.floor(ratio)
        draws = torch.rand(
            size, generator=torch_generator(seed, "compress/qsgd"), dtype=torch.float64
        ).numpy()
        level = (floor + (draws < ratio - floor)).astype(np.int64)
        sign = (values < 0).astype(np.int64)
        parts = {"codes": pack_bits(level * 2 + sign, self.bits), "norms": norms.tobytes()}
        return Code(self.name, size, parts)

    def decode(self, code: Code) -> torch.Tensor:
        size, s = code.size, self.levels
        lengths = {
            "codes": packed_length(size, self.bits),
            "norms": 4 * num_blocks(size, self.block_size),
        }
        check_parts(code, self.name, size, lengths)
        norms = float_part(code.parts["norms"], what="QSGD norms")
        if (norms < 0).any():
            raise CodeError("negative QSGD norm")
        codes = unpack_bits(code.parts["codes"], self.bits, size)
        level, sign = codes >> 1, codes & 1
        if size and level.max() > s:
            raise CodeError(f"QSGD level above {s}")
        per_value = norms[np.arange(size) // (self.block_size or max(size, 1))]
        return as_tensor((1 - 2 * sign) * level * per_value / s)
