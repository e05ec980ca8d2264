"""The secure-aggregation room of the gRPC server, fed protobuf messages directly (what its
gRPC handlers do after identifying the caller): honest clients are the protocol's real
client state machines; misbehaving ones send malformed, misaddressed, stale or conflicting
messages. Each of those is refused with a logged reason naming the client, and the decoded
sum is still exactly the honest clients' quantized sum."""

import logging
from dataclasses import astuple

import numpy as np
import pytest

from fedloom.net.board import Access
from fedloom.net.codec import WireError
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.net.secagg_room import MAX_MESSAGES_PER_ROUND, SecAggRoom
from fedloom.net.secagg_wire import (
    client_message_from_pb,
    client_message_to_pb,
    key_list_from_pb,
    masked_bytes,
    share_list_from_pb,
    unmask_request_from_pb,
)
from fedloom.privacy.secagg import (
    AdvertiseKeys,
    KeyList,
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    ShareKeys,
)
from fedloom.privacy.secagg.decoded import COHORT_SUM_ID, DecodedSum, secure_input
from fedloom.rng import numpy_rng

N, P, SEED, ROUND = 8, 64, 5, 1
CONFIG = SecAggConfig(bits=32, clip_range=1.0, value_bits=16)
NAMES = tuple(f"client-{k}" for k in range(N))


class Round:
    """A room with one open round and N honest client state machines."""

    def __init__(self):
        self.room = SecAggRoom(Access(NAMES))
        cohort = list(range(N))
        server = SecAggServer.start(CONFIG, seed=SEED, round=ROUND, cohort_ids=cohort, num_params=P)
        self.room.open(server, {c: spb.RoundParams(round=ROUND, client_index=c) for c in cohort})
        rng = np.random.default_rng(0)
        self.updates = {c: rng.uniform(-0.9, 0.9, P) for c in cohort}
        self.counts = {c: int(rng.integers(1, 100)) for c in cohort}
        self.clients = {
            c: SecAggClient.start(
                CONFIG,
                seed=SEED,
                round=ROUND,
                client_id=c,
                cohort_ids=cohort,
                secret_seed=bytes([c + 1]) * 32,
            )  # fmt: skip
            for c in cohort
        }

    def send(self, c, message):
        return self.room.receive(c, client_message_to_pb(message, client_name=NAMES[c]))

    def poll(self, c, want):
        reply = self.room.poll(c, ROUND, want)
        assert reply.kind == want, reply
        return getattr(reply, want)

    def quantized_sum(self, ids):
        params = CONFIG.for_cohort(N)
        total = sum(
            params.quantizer.quantize(
                self.updates[c], rng=numpy_rng(SEED, "secagg/quantize", ROUND, c)
            )
            for c in ids
        )
        return total & np.uint64((1 << 32) - 1)


def _refused(caplog, name, text):
    return [
        r.getMessage()
        for r in caplog.records
        if f"refused a message of {name}" in r.getMessage() and text in r.getMessage()
    ]


def test_malformed_stale_and_conflicting_messages_are_refused_and_do_not_change_the_sum(caplog):
    r = Round()
    caplog.set_level(logging.WARNING, logger="fedloom.server")
    # phase 1: a short key, a message in another's name, a message for round 0
    advert, r.clients[5] = r.clients[5].advertise()
    short = client_message_to_pb(advert, client_name=NAMES[5])
    short.advertise_keys.channel_public = short.advertise_keys.channel_public[:31]
    assert "32 bytes, got 31" in r.room.receive(5, short)
    assert "naming client 5, sent by client 2" in r.room.receive(
        2, client_message_to_pb(advert, client_name=NAMES[2])
    )
    stale = client_message_to_pb(advert, client_name=NAMES[4])
    stale.advertise_keys.client_id, stale.advertise_keys.round = 4, 0
    assert "for round 0, this is round 1" in r.room.receive(4, stale)
    assert (
        r.room.receive(5, spb.ClientMessage(client_id=NAMES[5]))
        == "malformed: a secure-aggregation message without a body"
    )
    assert r.send(5, advert) is None  # the refusals cost client 5 nothing
    for c in range(N):
        if c != 5:
            message, r.clients[c] = r.clients[c].advertise()
            assert r.send(c, message) is None
    r.room.advance()
    # phase 2: a too-short sealed share, then client 7 seals its share for client 0 under
    # round 0's key (a share for another round): client 0 cannot open it and says so
    for c in range(N):
        message, r.clients[c] = r.clients[c].share_keys(
            key_list_from_pb(r.poll(c, "key_list"), range(N))
        )
        if c == 3:
            bad = client_message_to_pb(message, client_name=NAMES[3])
            bad.share_keys.shares[0].ciphertext = b"x" * 5
            assert "a sealed share is 5 bytes" in r.room.receive(3, bad)
        if c == 7:
            old_round = SecAggClient.start(CONFIG, seed=SEED, round=0, client_id=7,
                                           cohort_ids=range(N), secret_seed=bytes([8]) * 32)  # fmt: skip
            own, old_round = old_round.advertise()
            peers = key_list_from_pb(r.poll(7, "key_list"), range(N)).keys
            keys = KeyList(0, tuple(sorted(
                [own, *(AdvertiseKeys(0, *astuple(k)[1:]) for k in peers if k.client_id != 7)],
                key=lambda k: k.client_id,
            )))  # fmt: skip
            sealed, _ = old_round.share_keys(keys)
            swapped = next(s for s in sealed.shares if s.receiver == 0)
            shares = tuple(swapped if s.receiver == 0 else s for s in message.shares)
            message = ShareKeys(message.round, 7, message.seed_commitment, shares)
        assert r.send(c, message) is None
    r.room.advance()
    # phase 3: a vector of the wrong length, then two different masked inputs from client 6
    for c in range(N):
        share_list = share_list_from_pb(r.poll(c, "share_list"), range(N))
        message, r.clients[c] = r.clients[c].masked_input(share_list, r.updates[c], r.counts[c])
        if c == 2:
            cut = client_message_to_pb(message, client_name=NAMES[2])
            cut.masked_input.masked = cut.masked_input.masked[:-4]
            assert (
                f"is {masked_bytes(P, 32)} bytes, got {masked_bytes(P, 32) - 4}"
                in r.room.receive(2, cut)
            )
        assert r.send(c, message) is None
        if c == 6:
            other = bytearray(message.masked)
            other[0] ^= 1
            second = type(message)(message.round, 6, bytes(other), message.invalid_senders)
            assert "two different masked inputs; the first is kept" in r.send(6, second)
            assert r.send(6, message) is None  # a resend of the same one is harmless
    assert any("client-0 reports" in m and "does not open" in m for m in caplog.messages)
    r.room.advance()
    # phase 4: a malformed revealed share, then the honest answers
    for c in range(N):
        request = unmask_request_from_pb(r.poll(c, "unmask_request"), range(N))
        message, r.clients[c] = r.clients[c].unmask(request)
        if c == 1:
            bad = client_message_to_pb(message, client_name=NAMES[1])
            bad.unmask_response.seed_shares[0].share = b"\x00" * 73
            assert "a share is 74 bytes, got 73" in r.room.receive(1, bad)
        assert r.send(c, message) is None
    result = r.room.finish()
    np.testing.assert_array_equal(result.quantized_sum, r.quantized_sum(range(N)))
    assert result.num_examples == sum(r.counts.values())
    for name, text in [(NAMES[5], "32 bytes"), (NAMES[2], "naming client 5"),
                       (NAMES[4], "for round 0"), (NAMES[3], "sealed share"),
                       (NAMES[2], "masked input"), (NAMES[6], "two different masked inputs"),
                       (NAMES[1], "a share is 74 bytes")]:  # fmt: skip
        assert len(_refused(caplog, name, text)) == 1, (name, text)
    assert r.room.close()["secagg_refused"] == 8


def test_a_client_flooding_the_room_is_refused_unread():
    r = Round()
    message, _ = r.clients[0].advertise()
    replies = [r.send(0, message) for _ in range(MAX_MESSAGES_PER_ROUND + 2)]
    assert replies[:MAX_MESSAGES_PER_ROUND] == [None] * MAX_MESSAGES_PER_ROUND  # repeats: no-ops
    assert replies[-1] == f"more than {MAX_MESSAGES_PER_ROUND} messages"


def test_polls_say_wait_until_the_phase_closes_and_who_was_left_out():
    r = Round()
    assert r.room.poll(0, ROUND, "key_list").kind == "wait"
    assert r.room.poll(0, ROUND + 1, "key_list").reason == "round 3 is not open"
    for c in range(N - 1):  # client 7 misses the deadline
        message, r.clients[c] = r.clients[c].advertise()
        r.send(c, message)
    r.room.advance()
    assert r.room.poll(0, ROUND, "key_list").kind == "key_list"
    assert r.room.poll(N - 1, ROUND, "key_list").kind == "aborted"
    r.room.abort("too few")
    assert r.room.poll(0, ROUND, "share_list").reason == "too few"
    r.room.close()
    assert r.room.poll(0, ROUND, "share_list").reason == "too few"  # late pollers hear it too


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("invalid_senders", [3, 3], "repeat an id"),
        ("invalid_senders", [99], "accused sender 99 is not in the round's cohort"),
        ("invalid_senders", [0], "accused sender 0 is not in the round's cohort"),  # itself
        ("round", -1, "round -1 is negative"),
    ],
)
def test_masked_input_fields_are_checked(field, value, error):
    message = spb.ClientMessage(
        client_id="c", masked_input=spb.MaskedInput(client_id=0, masked=b"\0" * masked_bytes(P, 32))
    )
    target = message.masked_input
    if isinstance(value, list):
        getattr(target, field).extend(value)
    else:
        setattr(target, field, value)
    with pytest.raises(WireError, match=error):
        client_message_from_pb(message, sender=0, cohort=range(N), num_params=P, bits=32)


def test_a_client_input_is_its_clipped_update_times_its_weight_and_the_reducer_divides():
    import torch

    from fedloom.aggregate import Contribution, RoundInfo

    update = torch.tensor([3.0, 4.0])  # norm 5
    vector, weight = secure_input(update, 7, weighting="examples", clip_norm=1.0)
    np.testing.assert_allclose(vector, [0.6 * 7, 0.8 * 7], rtol=1e-6)
    assert weight == 7
    assert secure_input(update, 7, weighting="uniform", clip_norm=None)[1] == 1
    reducer = DecodedSum(mean=True)
    total = Contribution(torch.tensor([14.0, 28.0]), 7.0, COHORT_SUM_ID, 7, 1)
    step, _ = reducer.finish(reducer.fold(reducer.start(update), total), {}, info=RoundInfo())
    assert step.tolist() == [2.0, 4.0]
    with pytest.raises(Exception, match="reduces only the cohort's decoded sum"):
        reducer.fold([], Contribution(update, 1.0, 3, 1, 1))
