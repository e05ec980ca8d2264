"""Keys and the share channel: X25519 agreement, HKDF-SHA256 derivations, AES-GCM.

Every client makes two X25519 key pairs per round (Bonawitz et al. 2017, section 4): the
*channel* pair encrypts the shares it sends through the server, and the *mask* pair gives
its pairwise mask seeds. They are separate so that when a dropped client's mask key is
reconstructed (to remove its pairwise masks) the channel key stays secret and the shares it
received stay unreadable.

From one X25519 shared secret, HKDF-SHA256 derives (with an ``info`` naming the purpose, the
round and the clients, so no two uses share a key):

- :func:`mask_seed`: the 32-byte PRG seed of the pair's mask in a round (symmetric in the pair);
- :func:`channel_key`: the AES-256-GCM key for shares from ``sender`` to ``receiver`` in a
  round (one key per direction).

:func:`seal` and :func:`open_share` bind the ciphertext to (round, sender, receiver) as
associated data: a share replayed from another round, or forwarded to another client, fails
authentication (:class:`ShareError`), as does any flipped bit.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedloom.privacy.secagg.errors import SecAggError, ShareError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "agree",
    "channel_key",
    "check_public_key",
    "commit_seed",
    "mask_seed",
    "open_share",
    "public_key",
    "seal",
]

KEY_BYTES = 32
NONCE_BYTES = 12
_DOMAIN = b"fedloom/secagg/v1/"


def public_key(private: bytes) -> bytes:
    """The 32-byte X25519 public key of a 32-byte private key."""
    if len(private) != KEY_BYTES:
        raise SecAggError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(private)}")
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def agree(private: bytes, peer_public: bytes) -> bytes:
    """The X25519 shared secret of ``private`` and a peer's public key. A malformed or
    low-order public key (which would give an all-zero secret) is a :class:`SecAggError`."""
    if len(private) != KEY_BYTES or len(peer_public) != KEY_BYTES:
        raise SecAggError(
            f"X25519 keys are {KEY_BYTES} bytes, got {len(private)} and {len(peer_public)}"
        )
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        return X25519PrivateKey.from_private_bytes(private).exchange(peer)
    except ValueError as error:
        raise SecAggError(
            f"key agreement failed ({error}): the peer's public key is invalid"
        ) from error


def check_public_key(public: bytes) -> None:
    """Raise :class:`SecAggError` unless ``public`` is a usable X25519 public key: 32 bytes
    and not of low order (those give the all-zero secret with *every* private key, so a
    test agreement with a fixed key finds them)."""
    agree(_PROBE, public)


_PROBE = hashlib.sha256(_DOMAIN + b"probe").digest()


def commit_seed(seed: bytes, *, round: int, client_id: int) -> bytes:
    """A SHA-256 commitment to a 32-byte self-mask seed. The seed is uniformly random, so
    the hash hides it; it lets the server check the seed it reconstructs from shares."""
    return hashlib.sha256(
        _DOMAIN + b"commit" + struct.pack(">QQ", round, client_id) + seed
    ).digest()


def _hkdf(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DOMAIN + info).derive(shared)


def mask_seed(shared: bytes, *, round: int, a: int, b: int) -> bytes:
    """The pairwise mask seed of clients ``a`` and ``b`` in ``round`` (same for both orders)."""
    low, high = sorted((a, b))
    return _hkdf(shared, b"mask" + struct.pack(">QQQ", round, low, high))


def channel_key(shared: bytes, *, round: int, sender: int, receiver: int) -> bytes:
    """The AES-256-GCM key for shares from ``sender`` to ``receiver`` in ``round``."""
    return _hkdf(shared, b"channel" + _binding(round, sender, receiver))


def _binding(round: int, sender: int, receiver: int) -> bytes:
    return struct.pack(">QQQ", round, sender, receiver)


def seal(
    key: bytes, plaintext: bytes, *, round: int, sender: int, receiver: int, nonce: bytes
) -> bytes:
    """``nonce || AES-GCM(plaintext)`` with (round, sender, receiver) as associated data.
    Each channel key encrypts one message, so any nonce is safe; pass random bytes anyway."""
    if len(nonce) != NONCE_BYTES:
        raise SecAggError(f"an AES-GCM nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
    associated = _DOMAIN + b"share" + _binding(round, sender, receiver)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_share(key: bytes, ciphertext: bytes, *, round: int, sender: int, receiver: int) -> bytes:
    """The plaintext of :func:`seal`'s output, or :class:`ShareError` if it was sealed for
    another round or pair, under another key, or altered."""
    if len(ciphertext) < NONCE_BYTES + 16:
        raise ShareError(
            f"an encrypted share from client {sender} is {len(ciphertext)} bytes, shorter "
            "than a nonce and a tag"
        )
    associated = _DOMAIN + b"share" + _binding(round, sender, receiver)
    try:
        return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], associated)
    except InvalidTag as error:
        raise ShareError(
            f"the encrypted share from client {sender} to client {receiver} fails "
            f"authentication for round {round}: it was sealed for another round or pair, "
            "or altered"
        ) from error
