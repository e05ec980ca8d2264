"""t-of-n Shamir secret sharing of 32-byte secrets over the prime field of ``2^521 - 1``.

A secret ``s`` (32 bytes, read as a big-endian integer below ``2^256``) is the constant term
of a random polynomial ``f`` of degree ``threshold - 1`` over GF(p), ``p = 2^521 - 1`` (a
Mersenne prime larger than any secret, so no chunking is needed); holder ``x`` gets
``(x, f(x))``. Any ``threshold`` shares determine ``f`` and so ``s`` (Lagrange interpolation at
0); any ``threshold - 1`` shares are consistent with *every* secret, each by exactly one
polynomial, so they say nothing about it (Shamir 1979). The functions take the prime as an
option only so tests can check that statement exhaustively in a small field.

Shares are validated when decoded (length, ``0 < x``, ``y < p``), and :func:`reconstruct`
checks that its answer is a 32-byte value: a share garbled at random makes the interpolation
land on a random field element, above ``2^256`` with probability ``1 - 2^-265``. That is no
defence against an error *chosen* by an adversary (adding ``e`` to share ``i`` shifts the
secret by ``e * L_i(0)``, which can be kept small), so the protocol uses :func:`recover`:
given more than ``threshold`` shares, some possibly wrong, it finds a subset whose secret an
``accept`` check confirms (a public key, a commitment) and names the shares that disagree.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedloom.privacy.secagg.errors import ShareError

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "Recovered",
    "Share",
    "interpolate_at_zero",
    "reconstruct",
    "recover",
    "split",
]

PRIME = (1 << 521) - 1
SECRET_BYTES = 32
_X_BYTES = 8
_Y_BYTES = (PRIME.bit_length() + 7) // 8  # 66


@dataclass(frozen=True)
class Share:
    """The point ``(x, y = f(x))`` held by one holder; ``x > 0`` (``f(0)`` is the secret)."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        """8 bytes of ``x`` then 66 bytes of ``y``, both big-endian (74 bytes)."""
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes, *, prime: int = PRIME) -> Share:
        """Decode and validate a share; :class:`ShareError` says what is wrong."""
        if len(data) != _X_BYTES + _Y_BYTES:
            raise ShareError(
                f"a share is {_X_BYTES + _Y_BYTES} bytes (x then y), got {len(data)} bytes"
            )
        x = int.from_bytes(data[:_X_BYTES], "big")
        y = int.from_bytes(data[_X_BYTES:], "big")
        return _checked(cls(x, y), prime)


def _checked(share: Share, prime: int) -> Share:
    if not 0 < share.x < prime:
        raise ShareError(f"a share's x must be in [1, p - 1], got {share.x}")
    if not 0 <= share.y < prime:
        raise ShareError("a share's y is not a field element (y >= p): the share is corrupt")
    return share


def split(
    secret: bytes,
    *,
    threshold: int,
    xs: Sequence[int],
    randbytes: Callable[[int], bytes] = os.urandom,
    prime: int = PRIME,
) -> tuple[Share, ...]:
    """Shares of ``secret`` for the holders at ``xs`` (distinct, positive), any
    ``threshold`` of which reconstruct it. ``randbytes`` must be a cryptographic source (the
    default, ``os.urandom``): the polynomial's coefficients are what hides the secret."""
    value = int.from_bytes(secret, "big")
    if prime == PRIME and len(secret) != SECRET_BYTES:
        raise ShareError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    if value >= prime:
        raise ShareError(f"the secret {value} is not below the field prime {prime}")
    if len(set(xs)) != len(xs) or any(not 0 < x < prime for x in xs):
        raise ShareError(f"share points must be distinct and in [1, p - 1], got {list(xs)}")
    if not 1 <= threshold <= len(xs):
        raise ShareError(
            f"threshold must be in [1, {len(xs)}] for {len(xs)} holders, got {threshold}"
        )
    width = (prime.bit_length() + 7) // 8 + 16  # 128 spare bits: the mod-p bias is < 2^-128
    coefficients = [value] + [
        int.from_bytes(randbytes(width), "big") % prime for _ in range(threshold - 1)
    ]
    shares = []
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % prime
        shares.append(Share(x, y))
    return tuple(shares)


def interpolate_at_zero(shares: Sequence[Share], *, prime: int = PRIME) -> int:
    """``f(0)`` for the polynomial of least degree through ``shares`` (Lagrange)."""
    return _interpolate_at(shares, 0, prime)


def _interpolate_at(shares: Sequence[Share], at: int, prime: int) -> int:
    xs = [share.x for share in shares]
    if len(set(xs)) != len(xs):
        raise ShareError(f"two shares have the same x: {sorted(xs)}")
    total = 0
    for i, share in enumerate(shares):
        numerator, denominator = 1, 1
        for j, x in enumerate(xs):
            if j != i:
                numerator = numerator * (at - x) % prime
                denominator = denominator * (share.x - x) % prime
        total = (total + share.y * numerator * pow(denominator, -1, prime)) % prime
    return total


def reconstruct(
    shares: Sequence[Share], *, threshold: int, prime: int = PRIME, secret_bytes: int = SECRET_BYTES
) -> bytes:
    """The secret from at least ``threshold`` shares, all of them used. Raises
    :class:`ShareError` when too few are given or the result is not a ``secret_bytes``-byte
    value (shares garbled at random); a deliberately wrong share needs :func:`recover`."""
    if len(shares) < threshold:
        raise ShareError(
            f"{len(shares)} shares cannot reconstruct a {threshold}-of-n secret: "
            f"need {threshold - len(shares)} more"
        )
    value = interpolate_at_zero([_checked(share, prime) for share in shares], prime=prime)
    if value.bit_length() > 8 * secret_bytes:
        raise ShareError(
            f"the {len(shares)} shares are inconsistent: they interpolate to a value of "
            f"{value.bit_length()} bits, not a {8 * secret_bytes}-byte secret"
        )
    return value.to_bytes(secret_bytes, "big")


@dataclass(frozen=True)
class Recovered:
    """A secret :func:`recover` confirmed, and the x of every share that disagrees with it."""

    secret: bytes
    bad_xs: tuple[int, ...]


def recover(
    shares: Sequence[Share],
    *,
    threshold: int,
    accept: Callable[[bytes], bool],
    max_attempts: int = 512,
    prime: int = PRIME,
) -> Recovered:
    """The secret from shares of which some may be wrong: try all of them, then every set
    leaving one out, then two, ... (at least ``threshold`` left, at most ``max_attempts``
    interpolations) until ``accept(secret)`` confirms one. Honest shares all lie on one
    polynomial, so with ``e`` wrong shares and at least ``threshold + e`` shares in all the
    search succeeds after at most ``sum_{i <= e} C(m, i)`` attempts.

    Raises :class:`ShareError` when no subset is confirmed (too few shares, or too many wrong).
    """
    shares = [_checked(share, prime) for share in shares]
    if len(shares) < threshold:
        raise ShareError(f"only {len(shares)} valid shares, {threshold} needed to reconstruct")
    attempts = 0
    for left_out in range(len(shares) - threshold + 1):
        for dropped in itertools.combinations(range(len(shares)), left_out):
            attempts += 1
            if attempts > max_attempts:
                raise ShareError(
                    f"no consistent {threshold}-subset of {len(shares)} shares found in "
                    f"{max_attempts} attempts: too many wrong shares"
                )
            subset = [share for i, share in enumerate(shares) if i not in dropped]
            value = interpolate_at_zero(subset, prime=prime)
            if value.bit_length() > 8 * SECRET_BYTES:
                continue
            secret = value.to_bytes(SECRET_BYTES, "big")
            if accept(secret):
                bad = tuple(
                    shares[i].x
                    for i in dropped
                    if _interpolate_at(subset, shares[i].x, prime) != shares[i].y
                )
                return Recovered(secret, bad)
    raise ShareError(
        f"no subset of the {len(shares)} shares (threshold {threshold}) reconstructs a "
        "secret that passes its check: too many wrong shares"
    )
