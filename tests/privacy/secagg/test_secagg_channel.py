"""The PRG (deterministic, domain-separated masks) and the share channel (X25519, HKDF,
AES-GCM bound to round, sender and receiver)."""

import os

import numpy as np
import pytest

from fedloom.privacy.secagg import SecAggError, ShareError, channel, prg

SEED = bytes(range(32))


def test_expand_is_deterministic_in_the_group_and_fast_to_call():
    a = prg.expand(SEED, 199_210, bits=20, label=prg.self_mask_label(1, 3))
    b = prg.expand(SEED, 199_210, bits=20, label=prg.self_mask_label(1, 3))
    assert a.dtype == np.uint64 and a.shape == (199_210,)
    np.testing.assert_array_equal(a, b)
    assert int(a.max()) < 2**20 and int(a.max()) > 2**20 - 100  # uses the whole group
    assert prg.expand(SEED, 0, bits=8, label=b"x").shape == (0,)
    full = prg.expand(SEED, 1000, bits=64, label=b"x")
    assert int(full.max()) >= 2**63  # 64 bits are not truncated


def test_labels_separate_rounds_clients_and_purposes():
    """The same seed under another round, client, pair or purpose gives an unrelated mask."""
    labels = [
        prg.self_mask_label(1, 3),
        prg.self_mask_label(2, 3),
        prg.self_mask_label(1, 4),
        prg.pair_mask_label(1, 3, 4),
        prg.pair_mask_label(2, 3, 4),
    ]
    masks = [prg.expand(SEED, 10_000, bits=32, label=label) for label in labels]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert np.mean(masks[i] == masks[j]) < 1e-3
    assert prg.pair_mask_label(1, 3, 4) == prg.pair_mask_label(1, 4, 3)
    with pytest.raises(SecAggError, match="32 bytes"):
        prg.expand(b"short", 4, bits=8, label=b"x")


def _keypair():
    private = os.urandom(32)
    return private, channel.public_key(private)


def test_agreement_and_derived_keys():
    (a_priv, a_pub), (b_priv, b_pub) = _keypair(), _keypair()
    shared = channel.agree(a_priv, b_pub)
    assert shared == channel.agree(b_priv, a_pub)
    assert channel.mask_seed(shared, round=1, a=3, b=4) == channel.mask_seed(
        shared, round=1, a=4, b=3
    )
    assert channel.mask_seed(shared, round=1, a=3, b=4) != channel.mask_seed(
        shared, round=2, a=3, b=4
    )
    forward = channel.channel_key(shared, round=1, sender=3, receiver=4)
    assert forward != channel.channel_key(shared, round=1, sender=4, receiver=3)
    assert forward != channel.mask_seed(shared, round=1, a=3, b=4)


def test_low_order_and_malformed_public_keys_are_refused():
    with pytest.raises(SecAggError, match="public key is invalid"):
        channel.check_public_key(bytes(32))  # the identity: an all-zero shared secret
    with pytest.raises(SecAggError, match="32 bytes"):
        channel.check_public_key(bytes(31))
    channel.check_public_key(_keypair()[1])


def test_a_sealed_share_opens_only_for_its_round_sender_and_receiver():
    key = os.urandom(32)
    sealed = channel.seal(key, b"share", round=5, sender=3, receiver=4, nonce=os.urandom(12))
    assert channel.open_share(key, sealed, round=5, sender=3, receiver=4) == b"share"
    for other in (
        dict(round=4, sender=3, receiver=4),
        dict(round=5, sender=4, receiver=3),
        dict(round=5, sender=3, receiver=7),
    ):
        with pytest.raises(ShareError, match="fails authentication"):
            channel.open_share(key, sealed, **other)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(ShareError, match="fails authentication"):
        channel.open_share(key, tampered, round=5, sender=3, receiver=4)
    with pytest.raises(ShareError, match="fails authentication"):
        channel.open_share(os.urandom(32), sealed, round=5, sender=3, receiver=4)
    with pytest.raises(ShareError, match="shorter than a nonce and a tag"):
        channel.open_share(key, sealed[:20], round=5, sender=3, receiver=4)


def test_seed_commitment_binds_seed_round_and_client():
    c = channel.commit_seed(SEED, round=1, client_id=2)
    assert len(c) == 32 and c == channel.commit_seed(SEED, round=1, client_id=2)
    assert c != channel.commit_seed(SEED, round=2, client_id=2)
    assert c != channel.commit_seed(SEED, round=1, client_id=3)
    assert c != channel.commit_seed(bytes(32), round=1, client_id=2)
