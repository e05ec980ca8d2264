"""Masks: a 32-byte seed expanded into a vector of ``Z_{2^bits}`` by AES-256 in counter mode.

``expand(seed, length, bits=..., label=...)`` keys AES-256-CTR with ``HMAC-SHA256(seed,
"fedloom/secagg/v1/prg" || label)`` and a zero counter, reads ``8 * length`` bytes as
little-endian uint64 and keeps the low ``bits`` bits (uniform, since ``2^bits`` divides
``2^64``). The label is the domain separation: :func:`self_mask_label` names (round, client),
:func:`pair_mask_label` names (round, the pair), so the same seed used in two rounds, or for
two purposes, gives unrelated masks. The whole vector is one AES call and one NumPy view, so
a mask of 200,000 coordinates costs about a millisecond.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedloom.privacy.secagg.errors import SecAggError

__all__ = ["expand", "group_mask", "pair_mask_label", "self_mask_label"]

_DOMAIN = b"fedloom/secagg/v1/prg"


def group_mask(bits: int) -> np.uint64:
    """``2^bits - 1`` as a uint64: ``x & group_mask(bits)`` is ``x mod 2^bits``."""
    return np.uint64((1 << bits) - 1)


def self_mask_label(round: int, client_id: int) -> bytes:
    """The label of client ``client_id``'s self mask in ``round``."""
    return b"self" + struct.pack(">QQ", round, client_id)


def pair_mask_label(round: int, a: int, b: int) -> bytes:
    """The label of the pairwise mask of clients ``a`` and ``b`` in ``round`` (symmetric)."""
    low, high = sorted((a, b))
    return b"pair" + struct.pack(">QQQ", round, low, high)


def expand(seed: bytes, length: int, *, bits: int, label: bytes) -> np.ndarray:
    """A uint64 vector of ``length`` elements uniform in ``[0, 2^bits)``, determined by
    ``seed`` and ``label``: the same pair gives the same vector on every machine."""
    if len(seed) != 32:
        raise SecAggError(f"a mask seed is 32 bytes, got {len(seed)}")
    if length < 0 or not 1 <= bits <= 64:
        raise SecAggError(f"need length >= 0 and 1 <= bits <= 64, got {length}, {bits}")
    key = hmac.new(seed, _DOMAIN + label, hashlib.sha256).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    values = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    if bits < 64:
        values &= group_mask(bits)
    return values
