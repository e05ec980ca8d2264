"""The protocol's messages: frozen values of ints and bytes, with a byte encoding (no pickle).

Client -> server, one per phase: :class:`AdvertiseKeys`, :class:`ShareKeys`,
:class:`MaskedInput`, :class:`UnmaskResponse`. Server -> client, one per phase:
:class:`KeyList`, :class:`ShareList`, :class:`UnmaskRequest`. Every message carries its round,
so a message from another round is refused wherever it arrives.

Encoding: a version byte, a type tag, then the fields in order: integers as 8 bytes
big-endian, byte strings and sequences with a 4-byte length. :func:`decode_message` trusts
nothing: an unknown tag or version, a length running past the end, trailing bytes or a
field of the wrong size is a :class:`MessageError`, and no count can make it allocate more
than the message's own size. Masked vectors travel as little-endian integers in the smallest
of 1, 2, 4 or 8 bytes that holds ``bits`` (:func:`pack_vector`, :func:`unpack_vector`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from fedloom.privacy.secagg.errors import MessageError

__all__ = [
    "AdvertiseKeys",
    "ClientMessage",
    "EncryptedShare",
    "KeyList",
    "MaskedInput",
    "Message",
    "Phase",
    "RevealedShare",
    "ServerMessage",
    "ShareKeys",
    "ShareList",
    "SharePayload",
    "UnmaskRequest",
    "UnmaskResponse",
    "decode_message",
    "pack_vector",
    "unpack_vector",
]

VERSION = 1


class Phase(str, enum.Enum):
    """The four phases of a round (Bonawitz et al. 2017, figure 4, semi-honest variant),
    named by what the server collects in each, then ``DONE``."""

    ADVERTISE = "advertise_keys"
    SHARE = "share_keys"
    MASKED = "masked_input"
    UNMASK = "unmasking"
    DONE = "done"


_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class _Record:
    """Encoding for a frozen dataclass whose ``_kinds`` name each field's wire kind:
    ``"int"``, ``"bytes"``, ``"ints"`` (a tuple of ints) or a record class (a tuple of them)."""

    _kinds: ClassVar[tuple[Any, ...]]

    def _encode(self, out: list[bytes]) -> None:
        for field, kind in zip(fields(self), self._kinds, strict=True):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if kind == "int":
                out.append(_U64.pack(value))
            elif kind == "bytes":
                out += [_U32.pack(len(value)), value]
            elif kind == "ints":
                out += [_U32.pack(len(value)), *(_U64.pack(v) for v in value)]
            else:
                out.append(_U32.pack(len(value)))
                for item in value:
                    item._encode(out)

    @classmethod
    def _decode(cls, reader: _Reader) -> Any:
        values: list[Any] = []
        for field, kind in zip(fields(cls), cls._kinds, strict=True):  # type: ignore[arg-type]
            if kind == "int":
                values.append(reader.u64(field.name))
            elif kind == "bytes":
                values.append(reader.take(reader.u32(field.name), field.name))
            elif kind == "ints":
                count = reader.count(8, field.name)
                values.append(tuple(reader.u64(field.name) for _ in range(count)))
            else:
                count = reader.count(8, field.name)
                values.append(tuple(kind._decode(reader) for _ in range(count)))
        return cls(*values)


class _Reader:
    def __init__(self, data: bytes, what: str):
        self.data, self.at, self.what = memoryview(data), 0, what

    def take(self, size: int, field: str) -> bytes:
        if self.at + size > len(self.data):
            raise MessageError(
                f"{self.what}: field {field!r} needs {size} bytes at offset {self.at}, the "
                f"message is {len(self.data)} bytes (cut short or corrupt)"
            )
        chunk = bytes(self.data[self.at : self.at + size])
        self.at += size
        return chunk

    def u64(self, field: str) -> int:
        return int(_U64.unpack(self.take(8, field))[0])

    def u32(self, field: str) -> int:
        return int(_U32.unpack(self.take(4, field))[0])

    def count(self, min_item_bytes: int, field: str) -> int:
        count = self.u32(field)
        if count * min_item_bytes > len(self.data) - self.at:
            raise MessageError(
                f"{self.what}: field {field!r} claims {count} items, more than the "
                f"{len(self.data) - self.at} bytes left can hold"
            )
        return count


class Message(_Record):
    """A protocol message: ``to_bytes()`` and ``from_bytes()`` round-trip it exactly."""

    tag: ClassVar[int]
    round: int

    def to_bytes(self) -> bytes:
        out = [bytes([VERSION, self.tag])]
        self._encode(out)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        message = decode_message(data)
        if not isinstance(message, cls):
            raise MessageError(f"expected a {cls.__name__}, got a {type(message).__name__}")
        return message


@dataclass(frozen=True)
class EncryptedShare(_Record):
    """``sender``'s shares for ``receiver``, sealed under their channel key (see channel)."""

    sender: int
    receiver: int
    ciphertext: bytes
    _kinds = ("int", "int", "bytes")


@dataclass(frozen=True)
class RevealedShare(_Record):
    """One share (``Share.to_bytes()``) of a secret of client ``owner``."""

    owner: int
    share: bytes
    _kinds = ("int", "bytes")


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Phase 1, client -> server: the client's two X25519 public keys for this round."""

    round: int
    client_id: int
    channel_public: bytes
    mask_public: bytes
    tag = 1
    _kinds = ("int", "int", "bytes", "bytes")


@dataclass(frozen=True)
class ShareKeys(Message):
    """Phase 2, client -> server: shares of the client's mask key and self-mask seed, one
    :class:`EncryptedShare` per neighbor, and a commitment (SHA-256) to the seed, which
    lets the server check the seed it reconstructs."""

    round: int
    client_id: int
    seed_commitment: bytes
    shares: tuple[EncryptedShare, ...]
    tag = 2
    _kinds = ("int", "int", "bytes", EncryptedShare)


@dataclass(frozen=True)
class MaskedInput(Message):
    """Phase 3, client -> server: the masked vector (:func:`pack_vector`; the quantized
    update then the example count) and the neighbors whose shares failed to open."""

    round: int
    client_id: int
    masked: bytes
    invalid_senders: tuple[int, ...] = ()
    tag = 3
    _kinds = ("int", "int", "bytes", "ints")


@dataclass(frozen=True)
class UnmaskResponse(Message):
    """Phase 4, client -> server: self-mask seed shares of surviving neighbors (and its
    own), mask key shares of dropped ones. Never both kinds for one owner."""

    round: int
    client_id: int
    seed_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]
    tag = 4
    _kinds = ("int", "int", RevealedShare, RevealedShare)


@dataclass(frozen=True)
class KeyList(Message):
    """Server -> client after phase 1: the advertised keys of the client and its neighbors."""

    round: int
    keys: tuple[AdvertiseKeys, ...]
    tag = 5
    _kinds = ("int", AdvertiseKeys)


@dataclass(frozen=True)
class ShareList(Message):
    """Server -> client after phase 2: the encrypted shares addressed to the client; their
    senders are the neighbors it masks with."""

    round: int
    shares: tuple[EncryptedShare, ...]
    tag = 6
    _kinds = ("int", EncryptedShare)


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Server -> client after phase 3: whose masked input arrived (``survivors``) and who
    shared keys but sent none (``dropped``); the same for every client."""

    round: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    tag = 7
    _kinds = ("int", "ints", "ints")


@dataclass(frozen=True)
class SharePayload(Message):
    """The plaintext inside an :class:`EncryptedShare`: it names round, sender and receiver
    again, so a decrypted share cannot be taken for another."""

    round: int
    sender: int
    receiver: int
    key_share: bytes
    seed_share: bytes
    tag = 8
    _kinds = ("int", "int", "int", "bytes", "bytes")


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | UnmaskResponse
ServerMessage = KeyList | ShareList | UnmaskRequest
_TYPES: dict[int, type[Message]] = {
    kind.tag: kind
    for kind in (
        AdvertiseKeys,
        ShareKeys,
        MaskedInput,
        UnmaskResponse,
        KeyList,
        ShareList,
        UnmaskRequest,
        SharePayload,
    )
}


def decode_message(data: bytes) -> Message:
    """The message ``data`` encodes; :class:`MessageError` says what is wrong if any."""
    if len(data) < 2:
        raise MessageError(f"a secure-aggregation message is at least 2 bytes, got {len(data)}")
    if data[0] != VERSION:
        raise MessageError(f"unknown message version {data[0]} (this is version {VERSION})")
    kind = _TYPES.get(data[1])
    if kind is None:
        raise MessageError(f"unknown message tag {data[1]}")
    reader = _Reader(data, kind.__name__)
    reader.at = 2
    message = kind._decode(reader)
    if reader.at != len(data):
        raise MessageError(f"{kind.__name__}: {len(data) - reader.at} trailing bytes")
    return message


def _container(bits: int) -> np.dtype:
    size = next(size for size in (1, 2, 4, 8) if bits <= 8 * size)
    return np.dtype(f"<u{size}")


def pack_vector(values: np.ndarray, *, bits: int) -> bytes:
    """Group elements (uint64, each below ``2^bits``) as little-endian bytes."""
    return np.asarray(values, dtype=np.uint64).astype(_container(bits)).tobytes()


def unpack_vector(data: bytes, *, length: int, bits: int) -> np.ndarray:
    """The uint64 vector of :func:`pack_vector`, checked: ``length`` elements, each < 2^bits."""
    dtype = _container(bits)
    if len(data) != length * dtype.itemsize:
        raise MessageError(
            f"a masked vector of {length} elements of {bits} bits is "
            f"{length * dtype.itemsize} bytes, got {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype).astype(np.uint64)
    if bits < 64 and length and int(values.max()) >> bits:
        raise MessageError(f"a masked vector has elements outside the group Z_2^{bits}")
    return values
