"""Tensors on the wire: raw little-endian bytes with dtype and shape, never pickle.

Decoding trusts nothing: the dtype must be on an allow-list, the shape must be
non-negative and small enough, the byte count must match the shape exactly, and compressed
payloads are inflated with a hard cap, so a malicious peer cannot make the server allocate
more than ``max_bytes`` (a "zip bomb") or execute anything.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np
import torch

from fedloom.client.portable import Description, describe
from fedloom.compress import Code, CodeError, Compressor
from fedloom.errors import FedloomError
from fedloom.net.proto import fedloom_pb2 as pb

__all__ = [
    "DTYPES",
    "WireError",
    "decode_code",
    "decode_portable",
    "decode_tensor",
    "decode_tensors",
    "encode_code",
    "encode_portable",
    "encode_tensor",
]

DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "uint8": np.dtype("u1"),
}
_TORCH_NAMES = {getattr(torch, name): name for name in DTYPES}
MAX_DIMS = 8  # no fedloom tensor has more; NumPy refuses more than 64 with its own error


class WireError(FedloomError):
    """A message from a peer that does not decode to what it claims to be."""


def encode_tensor(tensor: torch.Tensor, *, compress: bool = False) -> pb.Tensor:
    """The wire form of ``tensor`` (copied to little-endian, C order)."""
    name = _TORCH_NAMES.get(tensor.dtype)
    if name is None:
        raise WireError(f"cannot send dtype {tensor.dtype}; allowed: {', '.join(DTYPES)}")
    array = tensor.detach().cpu().contiguous().numpy().astype(DTYPES[name], copy=False)
    data = array.tobytes(order="C")
    if compress:
        data = zlib.compress(data, 1)
    return pb.Tensor(
        dtype=name, shape=list(array.shape), data=data, compression="zlib" if compress else ""
    )


def decode_tensor(
    message: pb.Tensor, *, max_bytes: int, shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """The tensor in ``message``, or :class:`WireError` saying what is wrong with it.

    ``shape``, when given, is the only shape accepted (an update must be the model's size),
    checked before any byte is decoded.
    """
    dtype = DTYPES.get(message.dtype)
    if dtype is None:
        raise WireError(f"unknown dtype {message.dtype[:40]!r}; allowed: {', '.join(DTYPES)}")
    if len(message.shape) > MAX_DIMS:
        raise WireError(f"tensor has {len(message.shape)} dimensions, at most {MAX_DIMS} allowed")
    shape_given = list(message.shape)
    if any(d < 0 for d in shape_given):
        raise WireError(f"negative dimension in shape {shape_given}")
    if shape is not None and tuple(shape_given) != tuple(shape):
        raise WireError(f"tensor has shape {tuple(shape_given)}, expected {tuple(shape)}")
    shape = tuple(shape_given)
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise WireError(
            f"tensor of shape {list(shape)} needs {expected} bytes, over the {max_bytes} limit"
        )
    if message.compression == "zlib":
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(message.data, expected + 1)
        except zlib.error as exc:
            raise WireError(f"corrupt zlib payload: {exc}") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise WireError(f"compressed payload does not inflate to exactly {expected} bytes")
    elif message.compression == "":
        data = message.data
    else:
        raise WireError(f"unknown compression {message.compression[:40]!r}; allowed: '', 'zlib'")
    if len(data) != expected:
        raise WireError(
            f"shape {list(shape)} of {message.dtype} needs {expected} bytes, got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def decode_tensors(
    messages: Mapping[str, pb.Tensor], *, max_bytes: int, shape: tuple[int, ...] | None = None
) -> dict[str, torch.Tensor]:
    """A map of named tensors, each checked by :func:`decode_tensor`."""
    return {
        name: decode_tensor(message, max_bytes=max_bytes, shape=shape)
        for name, message in messages.items()
    }


def encode_portable(value: object, *, compress: bool = False) -> pb.Portable:
    """The wire form of a portable value (an objective term, a state logic)."""
    description = describe(value)
    return pb.Portable(
        name=description.name,
        numbers=dict(description.numbers),
        tensors={k: encode_tensor(t, compress=compress) for k, t in description.tensors.items()},
    )


def decode_portable(message: pb.Portable, *, max_bytes: int) -> Description:
    """The description in ``message`` (rebuild it with :func:`fedloom.client.portable.rebuild`)."""
    return Description(
        message.name, dict(message.numbers), decode_tensors(message.tensors, max_bytes=max_bytes)
    )


def encode_code(code: Code) -> pb.Compressed:
    """The wire form of a compressed vector (:mod:`fedloom.compress`)."""
    return pb.Compressed(kind=code.kind, size=code.size, parts=dict(code.parts))


def decode_code(message: pb.Compressed, compressor: Compressor, *, size: int) -> torch.Tensor:
    """The ``[size]`` float32 vector ``message`` encodes with ``compressor``, or
    :class:`WireError`: another compressor's code, another size, parts of other lengths
    than the compressor writes (checked before any value is read), or values it never
    writes (non-finite scales, indices out of range, levels above its top)."""
    if message.size != size:
        raise WireError(f"compressed vector of {message.size} values, expected {size}")
    code = Code(message.kind, int(message.size), dict(message.parts))
    try:
        return compressor.decode(code)
    except CodeError as exc:
        raise WireError(f"bad {compressor.name} code: {exc}") from None
