"""Messages round-trip through bytes and bad bytes are clear errors; the neighbor graph and
the checked configuration."""

import numpy as np
import pytest

from fedloom.errors import ConfigError
from fedloom.privacy.secagg import (
    AdvertiseKeys,
    EncryptedShare,
    KeyList,
    MaskedInput,
    MessageError,
    RevealedShare,
    SecAggConfig,
    ShareKeys,
    ShareList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    min_threshold,
)
from fedloom.privacy.secagg.graph import neighbor_graph
from fedloom.privacy.secagg.messages import SharePayload, pack_vector, unpack_vector

ADVERT = AdvertiseKeys(3, 7, b"c" * 32, b"m" * 32)
ENCRYPTED = EncryptedShare(7, 9, b"ciphertext")
MESSAGES = [
    ADVERT,
    ShareKeys(3, 7, b"h" * 32, (ENCRYPTED, EncryptedShare(7, 2, b""))),
    MaskedInput(3, 7, b"\x01\x02", (4, 5)),
    MaskedInput(3, 7, b""),
    UnmaskResponse(3, 7, (RevealedShare(1, b"s" * 74),), ()),
    KeyList(3, (ADVERT, AdvertiseKeys(3, 8, b"d" * 32, b"n" * 32))),
    ShareList(3, (ENCRYPTED,)),
    UnmaskRequest(3, (1, 2, 7), (4,)),
    SharePayload(3, 7, 9, b"k" * 74, b"s" * 74),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_messages_roundtrip_through_bytes(message):
    data = message.to_bytes()
    assert decode_message(data) == message
    assert type(message).from_bytes(data) == message


def test_bad_bytes_are_message_errors():
    data = MESSAGES[1].to_bytes()
    cases = {
        "cut short": data[:-3],
        "trailing bytes": data + b"\x00",
        "unknown message tag 99": bytes([1, 99]) + data[2:],
        "unknown message version 2": bytes([2]) + data[1:],
        "at least 2 bytes": b"\x01",
    }
    for expected, bad in cases.items():
        with pytest.raises(MessageError, match=expected):
            decode_message(bad)
    # A count that claims more items than the bytes can hold allocates nothing.
    huge = bytes([1, KeyList.tag]) + (3).to_bytes(8, "big") + (2**32 - 1).to_bytes(4, "big")
    with pytest.raises(MessageError, match="claims 4294967295 items"):
        decode_message(huge)
    with pytest.raises(MessageError, match="expected a KeyList, got a ShareKeys"):
        KeyList.from_bytes(data)


@pytest.mark.parametrize("bits, itemsize", [(7, 1), (16, 2), (20, 4), (32, 4), (33, 8), (64, 8)])
def test_vectors_pack_to_the_smallest_container(bits, itemsize):
    values = np.random.default_rng(0).integers(
        0, 2**bits, size=100, dtype=np.uint64, endpoint=False
    )
    data = pack_vector(values, bits=bits)
    assert len(data) == 100 * itemsize
    np.testing.assert_array_equal(unpack_vector(data, length=100, bits=bits), values)
    with pytest.raises(MessageError, match="elements of"):
        unpack_vector(data[:-1], length=100, bits=bits)


def test_vectors_outside_the_group_are_refused():
    data = pack_vector(np.array([1, 2**20], dtype=np.uint64), bits=32)
    with pytest.raises(MessageError, match="outside the group"):
        unpack_vector(data, length=2, bits=20)


def test_complete_and_sparse_graphs():
    cohort = list(range(3, 23))
    complete = neighbor_graph(cohort, neighbors=None, seed=0, round=1)
    assert all(peers == set(cohort) - {c} for c, peers in complete.items())
    assert neighbor_graph(cohort, neighbors=19, seed=0, round=1) == complete
    sparse = neighbor_graph(cohort, neighbors=6, seed=0, round=1)
    assert all(len(peers) == 6 and c not in peers for c, peers in sparse.items())
    assert all(c in sparse[v] for c, peers in sparse.items() for v in peers)  # symmetric
    assert sparse == neighbor_graph(list(reversed(cohort)), neighbors=6, seed=0, round=1)
    assert sparse != neighbor_graph(cohort, neighbors=6, seed=0, round=2)  # fresh each round
    assert sparse != neighbor_graph(cohort, neighbors=6, seed=1, round=1)
    with pytest.raises(ConfigError, match="neighbors must be an even number"):
        neighbor_graph(cohort, neighbors=5, seed=0, round=1)


def test_config_checks_name_the_field():
    assert min_threshold(20) == 11 and min_threshold(13) == 7
    params = SecAggConfig(neighbors=12).for_cohort(20)
    assert (params.threshold, params.neighbors) == (7, 12)
    assert SecAggConfig(neighbors=30).for_cohort(20).neighbors is None
    bad = {
        "threshold must be in \\[11, 20\\].*got 21": SecAggConfig(threshold=21),
        "threshold must be in \\[11, 20\\].*got 10.*both masks": SecAggConfig(threshold=10),
        "threshold must be in \\[7, 13\\]": SecAggConfig(threshold=14, neighbors=12),
        "bits must be in \\[1, 64\\]": SecAggConfig(bits=65),
        "neighbors must be an even number": SecAggConfig(neighbors=3),
    }
    for message, config in bad.items():
        with pytest.raises(ConfigError, match=f"secure_aggregation\\.{message}"):
            config.for_cohort(20)
    with pytest.raises(ConfigError, match="at least 2 clients"):
        SecAggConfig().for_cohort(1)
