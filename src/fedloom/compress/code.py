"""A compressed vector as bytes: :class:`Code`, and the bit packing the compressors share.

A compressor (:mod:`fedloom.compress.quantize`, :mod:`fedloom.compress.sparsify`) turns a
flat ``[P]`` vector into a :class:`Code`: named byte strings (``"codes"``, ``"scales"``,
``"indices"``, ...) whose lengths follow from ``P`` and the compressor's settings alone. So
the bytes a run counts are the lengths of what is actually sent (:attr:`Code.num_bytes`), and
a decoder can refuse a peer's code by its lengths before it reads a value (no part is ever
longer than the compressor says, whatever a peer sends). On the gRPC wire a code is the
message ``Compressed`` (kind, size, parts), with no framing beyond protobuf's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fedloom.errors import FedloomError

__all__ = [
    "Code",
    "CodeError",
    "Compressor",
    "as_tensor",
    "blocks_of",
    "check_parts",
    "float_part",
    "num_blocks",
    "pack_bits",
    "packed_length",
    "unpack_bits",
]


class CodeError(FedloomError):
    """A compressed vector that does not decode: wrong parts, lengths or values."""


@dataclass(frozen=True)
class Code:
    """A compressed ``[size]`` vector: ``kind`` (the compressor's name) and its parts.

    >>> Code("compress/fp16", 3, {"values": bytes(6)}).num_bytes
    6
    """

    kind: str
    size: int
    parts: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        """The payload: the summed length of the parts (what a run counts as sent)."""
        return sum(len(part) for part in self.parts.values())


class Compressor(Protocol):
    """What every compressor is: a portable value (it travels to deployed clients as data)
    with a pure ``encode``, a checking ``decode`` and the exact size of its code.

    ``encode(x, seed=...)`` takes a flat float vector (float32 or float64) and the client's
    seed for the round (its only randomness: QSGD's rounding); ``decode`` returns float32
    and raises :class:`CodeError` for a code it did not make; ``num_bytes(size)`` is
    ``encode(x).num_bytes`` for every ``x`` of that size.
    """

    @property
    def name(self) -> str: ...

    def num_bytes(self, size: int) -> int: ...

    def encode(self, x: torch.Tensor, *, seed: int) -> Code: ...

    def decode(self, code: Code) -> torch.Tensor: ...


def check_parts(code: Code, kind: str, size: int, lengths: Mapping[str, int]) -> None:
    """Raise :class:`CodeError` unless ``code`` is of ``kind``, for ``size`` values, with
    exactly the parts ``lengths`` names, each of exactly that many bytes."""
    if code.kind != kind:
        raise CodeError(f"a {code.kind[:40]!r} code, expected {kind!r}")
    if code.size != size:
        raise CodeError(f"a code of {code.size} values, expected {size}")
    if set(code.parts) != set(lengths):
        raise CodeError(f"parts {sorted(code.parts)[:8]}, expected {sorted(lengths)}")
    for name, length in lengths.items():
        if len(code.parts[name]) != length:
            raise CodeError(f"part {name!r} has {len(code.parts[name])} bytes, expected {length}")


def float_part(data: bytes, *, what: str) -> np.ndarray:
    """Little-endian float32 values from ``data``, all finite (else :class:`CodeError`)."""
    values = np.frombuffer(data, dtype="<f4")
    if not np.isfinite(values).all():  # before any cast: a NaN payload must not reach one
        raise CodeError(f"non-finite {what}")
    return values.astype(np.float64)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers below ``2^bits`` packed ``bits`` each, least significant bit first,
    into ``ceil(len(values) * bits / 8)`` bytes.

    >>> pack_bits(np.array([1, 2, 3]), 2).hex()
    '39'
    """
    values = np.asarray(values, dtype=np.uint64)
    if bits == 8:
        return values.astype(np.uint8).tobytes()
    shifts = np.arange(bits, dtype=np.uint64)
    matrix = ((values[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(matrix.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The ``count`` integers :func:`pack_bits` packed into ``data`` (as int64)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return raw[:count].astype(np.int64)
    flat = np.unpackbits(raw, count=count * bits, bitorder="little")
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    return flat.reshape(count, bits).astype(np.int64) @ weights


def packed_length(count: int, bits: int) -> int:
    """``ceil(count * bits / 8)``: the bytes :func:`pack_bits` writes."""
    return (count * bits + 7) // 8


def num_blocks(size: int, block_size: int) -> int:
    """How many blocks of ``block_size`` cover ``size`` values (``block_size`` 0: one)."""
    if block_size == 0 or size == 0:
        return 1
    return (size + block_size - 1) // block_size


def blocks_of(values: np.ndarray, block_size: int) -> np.ndarray:
    """``values`` as rows of ``block_size`` (one row when 0), the last padded with zeros."""
    size = values.shape[0]
    width = block_size if block_size else max(size, 1)
    rows = num_blocks(size, block_size)
    padded = np.zeros(rows * width, dtype=values.dtype)
    padded[:size] = values
    return padded.reshape(rows, width)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_tensor(values: np.ndarray) -> torch.Tensor:
    """A float32 tensor of ``values`` (float64 arithmetic rounded once); a code whose values
    leave float32's range (a peer's huge scale) is a :class:`CodeError`."""
    if values.size and not np.abs(values).max() <= FLOAT32_MAX:
        raise CodeError("a code that decodes beyond float32's range")
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
