"""Shamir sharing: any t shares reconstruct, t - 1 say nothing (checked exhaustively in a
small field), malformed shares are clear errors, and wrong shares are found."""

import itertools
import os

import pytest

from fedloom.privacy.secagg import ShareError
from fedloom.privacy.secagg.shamir import (
    PRIME,
    Share,
    interpolate_at_zero,
    reconstruct,
    recover,
    split,
)

SECRET = bytes(range(32))


def test_any_t_shares_reconstruct_and_t_minus_1_do_not():
    n, t = 7, 4
    shares = split(SECRET, threshold=t, xs=range(1, n + 1))
    for size in range(t, n + 1):
        for subset in itertools.combinations(shares, size):
            assert reconstruct(subset, threshold=t) == SECRET
    for subset in itertools.combinations(shares, t - 1):
        with pytest.raises(ShareError, match="3 shares cannot reconstruct a 4-of-n secret"):
            reconstruct(subset, threshold=t)
        # Interpolating t - 1 points anyway gives a wrong value (a random field element).
        assert interpolate_at_zero(subset) != int.from_bytes(SECRET, "big")


def test_t_minus_1_shares_are_consistent_with_every_secret_small_field():
    """In GF(13) with t = 3, enumerate every polynomial (13^3 of them): for each pair of
    share values at x = 1, 2 that can occur, every one of the 13 secrets is explained by
    exactly one polynomial, so two shares carry no information. Three shares pin it down."""
    p, t = 13, 3
    secrets_by_view: dict[tuple[int, int], list[int]] = {}
    secrets_by_three: dict[tuple[int, int, int], set[int]] = {}
    for s, a1, a2 in itertools.product(range(p), repeat=t):
        ys = [(s + a1 * x + a2 * x * x) % p for x in (1, 2, 3)]
        secrets_by_view.setdefault((ys[0], ys[1]), []).append(s)
        secrets_by_three.setdefault(tuple(ys), set()).add(s)
    assert len(secrets_by_view) == p * p
    for secrets in secrets_by_view.values():
        assert sorted(secrets) == list(range(p))
    assert all(len(secrets) == 1 for secrets in secrets_by_three.values())
    # The module's own split/reconstruct agree in that field.
    coefficients = iter([b"\x05", b"\x0b"])
    shares = split(
        b"\x07", threshold=t, xs=[1, 2, 3], randbytes=lambda _: next(coefficients), prime=p
    )
    assert reconstruct(shares, threshold=t, prime=p, secret_bytes=1) == b"\x07"


def test_share_bytes_roundtrip_and_malformed_shares_are_clear_errors():
    share = split(SECRET, threshold=2, xs=[5, 9])[0]
    assert Share.from_bytes(share.to_bytes()) == share
    with pytest.raises(ShareError, match="a share is 74 bytes.*got 73"):
        Share.from_bytes(share.to_bytes()[:-1])
    with pytest.raises(ShareError, match=r"y >= p"):
        Share.from_bytes((5).to_bytes(8, "big") + b"\xff" * 66)
    with pytest.raises(ShareError, match=r"x must be in \[1, p - 1\], got 0"):
        Share.from_bytes(bytes(74))
    with pytest.raises(ShareError, match="same x"):
        reconstruct([share, Share(share.x, share.y + 1)], threshold=2)
    with pytest.raises(ShareError, match="secrets are 32 bytes"):
        split(b"short", threshold=2, xs=[1, 2])
    with pytest.raises(ShareError, match="distinct"):
        split(SECRET, threshold=2, xs=[1, 1])
    assert PRIME == 2**521 - 1


def test_a_corrupted_share_is_caught_by_reconstruct_but_a_chosen_error_needs_a_check():
    """A share garbled at random makes the interpolation land on a random field element,
    almost surely not a 32-byte secret. An error *chosen* by an adversary can shift the
    secret by a small amount instead (here +1 at x = 3 shifts it by L_3(0) = 56), which only
    a check of the result (a public key, a commitment: ``recover``'s ``accept``) catches."""
    shares = list(split(SECRET, threshold=4, xs=range(1, 9)))
    garbled = shares.copy()
    garbled[2] = Share(shares[2].x, int.from_bytes(os.urandom(65), "big") % PRIME)
    with pytest.raises(ShareError, match="inconsistent"):
        reconstruct(garbled, threshold=4)
    chosen = shares.copy()
    chosen[2] = Share(shares[2].x, shares[2].y + 1)
    shifted = int.from_bytes(reconstruct(chosen, threshold=4), "big")
    assert shifted == int.from_bytes(SECRET, "big") + 56
    found = recover(chosen, threshold=4, accept=lambda s: s == SECRET)
    assert found.secret == SECRET and found.bad_xs == (3,)


def test_recover_finds_the_wrong_shares_and_gives_up_cleanly():
    secret = os.urandom(32)
    shares = list(split(secret, threshold=6, xs=range(1, 11)))
    for i in (1, 7):
        shares[i] = Share(shares[i].x, (shares[i].y * 3 + 1) % PRIME)
    found = recover(shares, threshold=6, accept=lambda s: s == secret)
    assert found.secret == secret and found.bad_xs == (2, 8)
    shares[3] = Share(shares[3].x, 12345)
    shares[4] = Share(shares[4].x, 678)
    shares[5] = Share(shares[5].x, 9)  # 5 wrong of 10: only 5 right, threshold 6
    with pytest.raises(ShareError, match="too many wrong shares"):
        recover(shares, threshold=6, accept=lambda s: s == secret)
