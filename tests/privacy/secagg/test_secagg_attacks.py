"""Misbehaving clients and a curious server: each case says whether the misbehaviour is
detected and excluded, or cannot change the result, and what the server learns."""

import dataclasses

import numpy as np
import pytest
from _secagg_harness import Round

from fedloom.errors import ConfigError
from fedloom.privacy.secagg import (
    AdvertiseKeys,
    MaskedInput,
    ProtocolError,
    SecAggAborted,
    SecAggConfig,
    UnmaskRequest,
    UnmaskResponse,
    channel,
)
from fedloom.privacy.secagg.messages import SharePayload
from fedloom.privacy.secagg.shamir import PRIME, Share, ShareError, recover

CONFIG = SecAggConfig(clip_range=0.5)  # 20 clients: t = 11


def _to_masked_input(run, *, skip=()):
    for _ in range(2):
        run.phase(skip=skip)
        run.advance()


def _reasons(result_or_server, client_id):
    return [r.reason for r in result_or_server.rejections if r.client_id == client_id]


def _reseal(run, bad, receiver, payload, *, round=None):
    """Client ``bad`` seals ``payload`` for ``receiver`` with the real pair key, claiming
    ``round`` (default: this round) in the associated data."""
    client = run.clients[bad]
    key = client._pair_key(client.keys[receiver], sender=bad, receiver=receiver)
    sealed = channel.seal(
        key,
        payload.to_bytes(),
        round=run.round if round is None else round,
        sender=bad,
        receiver=receiver,
        nonce=bytes(12),
    )
    return sealed


def _tampered_share_keys(run, bad, edits):
    """Client ``bad``'s ShareKeys with the ciphertexts for some receivers replaced."""
    message = run.message(bad)
    shares = tuple(
        dataclasses.replace(s, ciphertext=edits[s.receiver](s)) if s.receiver in edits else s
        for s in message.shares
    )
    return dataclasses.replace(message, shares=shares)


def _payload(run, bad, receiver, share):
    client = run.clients[bad]
    key = client._pair_key(client.keys[receiver], sender=bad, receiver=receiver)
    return SharePayload.from_bytes(
        channel.open_share(key, share.ciphertext, round=run.round, sender=bad, receiver=receiver)
    )


@pytest.mark.parametrize("bad_drops", [False, True], ids=["survives", "drops"])
def test_malformed_and_other_round_shares_are_detected_and_cannot_change_the_result(bad_drops):
    """Client 4 sends client 7 a flipped ciphertext, client 8 a validly sealed plaintext that
    is not a share payload, and client 9 a share sealed with the right key but bound to the
    previous round. The receivers cannot open them and report client 4; the server records
    that, and reconstructs client 4's seed (or, if it drops, its mask key) from the 16 valid
    shares: the result is exactly the survivors' sum."""
    run = Round(CONFIG)
    run.phase()
    run.advance()
    for c in run.cohort:
        if c != 4:
            run.deliver(run.message(c))

    def flipped(share):
        return share.ciphertext[:-1] + bytes([share.ciphertext[-1] ^ 1])

    def garbage(share):
        return _reseal(run, 4, 8, dataclasses.replace(_payload(run, 4, 8, share), key_share=b"x"))

    def old_round(share):
        payload = dataclasses.replace(_payload(run, 4, 9, share), round=run.round - 1)
        return _reseal(run, 4, 9, payload, round=run.round - 1)

    run.deliver(_tampered_share_keys(run, 4, {7: flipped, 8: garbage, 9: old_round}))
    run.advance()
    run.phase(skip=[4] if bad_drops else [])
    assert [c for c, client in run.clients.items() if client.invalid_senders == (4,)] == [7, 8, 9]
    run.advance()
    run.phase()
    result = run.finish()
    survivors = [c for c in run.cohort if not (bad_drops and c == 4)]
    run.check_sum(result, survivors)
    accusations = [r for r in _reasons(result, 4) if "does not open" in r]
    assert sorted(int(r.split()[1]) for r in accusations) == [7, 8, 9]
    assert {7, 8, 9}.isdisjoint(run.server.seed_shares.get(4, {}))
    assert {7, 8, 9}.isdisjoint(run.server.key_shares.get(4, {}))


def test_a_wrong_share_value_is_found_and_cannot_change_the_result():
    """Client 4 gives client 7 a well-formed, validly sealed share of its seed with a wrong
    value: client 7 cannot tell. The server's reconstruction, checked against client 4's seed
    commitment, finds the share and leaves it out; the sum is exact."""
    run = Round(CONFIG)
    run.phase()
    run.advance()
    for c in run.cohort:
        if c != 4:
            run.deliver(run.message(c))

    def wrong_value(share):
        payload = _payload(run, 4, 7, share)
        seed = Share.from_bytes(payload.seed_share)
        bad = Share(seed.x, (seed.y + 1) % PRIME).to_bytes()
        return _reseal(run, 4, 7, dataclasses.replace(payload, seed_share=bad))

    run.deliver(_tampered_share_keys(run, 4, {7: wrong_value}))
    run.advance()
    run.phase()
    run.advance()
    run.phase()
    result = run.finish()
    run.check_sum(result, run.cohort)
    assert any("share of client 4's self-mask seed is wrong" in r for r in _reasons(result, 7))


def test_too_many_bad_shares_abort_the_round_naming_the_client():
    """Client 4 garbles its shares to 10 of its 19 neighbors: 9 valid shares and its own are
    fewer than t = 11, its seed cannot be reconstructed, and the round aborts naming it
    (the misbehaviour cannot change the result, only stop the round)."""
    run = Round(CONFIG)
    run.phase()
    run.advance()
    for c in run.cohort:
        if c != 4:
            run.deliver(run.message(c))

    def flipped(share):
        return share.ciphertext[:-1] + bytes([share.ciphertext[-1] ^ 1])

    run.deliver(_tampered_share_keys(run, 4, dict.fromkeys(range(10, 20), flipped)))
    run.advance()
    run.phase()
    run.advance()
    run.phase()
    with pytest.raises(SecAggAborted, match="cannot reconstruct client 4's self-mask seed from 10"):
        run.finish()


def test_two_different_masked_inputs_cannot_change_the_result():
    """Client 4 sends a masked input, then another of a different update: the server keeps
    the first, records the second as a rejection, and the sum is the sum with client 4's
    first update. A repeated identical message is not a rejection (a retransmission)."""
    run = Round(CONFIG)
    _to_masked_input(run)
    before = run.clients[4]  # client states are values: keep one to answer twice
    sent = {c: run.message(c) for c in run.cohort}
    for message in sent.values():
        run.deliver(message)
        run.deliver(message)  # retransmitted
    second, _ = before.masked_input(run.inbox[4], np.full(64, 0.4), 7)
    assert isinstance(second, MaskedInput) and second.masked != sent[4].masked
    run.deliver(second)
    assert _reasons(run.server, 4) == ["sent two different masked inputs; the first is kept"]
    run.advance()
    run.phase()
    result = run.finish()
    run.check_sum(result, run.cohort)  # with client 4's first update and count


def test_a_reappearing_client_cannot_get_both_masks_revealed():
    """Client 4's masked input is lost; the server closes the phase and asks to unmask with
    client 4 dropped. When 4's input then arrives it is refused (so the server never adds a
    vector whose pairwise masks it will strip), 4 refuses the unmasking request that lists it
    as dropped, and the server holds key shares of client 4 and no seed shares."""
    run = Round(CONFIG)
    _to_masked_input(run)
    late = None
    for c in run.cohort:
        message = run.message(c)
        if c == 4:
            late = message
        else:
            run.deliver(message)
    outgoing = run.advance()
    assert 4 not in outgoing and outgoing[0].dropped == (4,)
    run.deliver(late)
    assert _reasons(run.server, 4) == [
        "arrived in phase unmasking: too late or too early, not used"
    ]
    with pytest.raises(ProtocolError, match="does not list it as a survivor"):
        run.clients[4].unmask(outgoing[0])
    run.phase()
    result = run.finish()
    run.check_sum(result, [c for c in run.cohort if c != 4])
    assert 4 not in run.server.seed_shares and len(run.server.key_shares[4]) == 19


def test_a_client_answers_one_unmasking_request_and_refuses_inconsistent_ones():
    run = Round(CONFIG)
    _to_masked_input(run)
    run.phase()
    run.advance()
    request = run.inbox[0]
    response, done = run.clients[0].unmask(request)
    assert isinstance(response, UnmaskResponse)
    with pytest.raises(ProtocolError, match="answers one unmasking request per round"):
        done.unmask(dataclasses.replace(request, dropped=(3,)))
    both = dataclasses.replace(request, dropped=(3,))
    with pytest.raises(ProtocolError, match=r"lists \[3\] both as survivors and as dropped"):
        run.clients[1].unmask(both)
    with pytest.raises(ProtocolError, match="for round 2, this is round 1"):
        run.clients[1].unmask(dataclasses.replace(request, round=2))


def test_a_server_telling_different_stories_cannot_collect_both_masks():
    """A curious server tells clients 0-9 that client 0 survived and clients 10-19 that it
    dropped. Each client answers once, so it collects 10 seed shares and 10 key shares of
    client 0: fewer than t = 11 of either, and neither secret can be reconstructed. That is
    why t must be a strict majority of the holders (a lower t is a config error)."""
    run = Round(CONFIG)
    _to_masked_input(run)
    run.phase()
    run.advance()
    everyone = tuple(run.cohort)
    survived = UnmaskRequest(run.round, everyone, ())
    dropped = UnmaskRequest(run.round, everyone[1:], (0,))
    seed_shares, key_shares = [], []
    for c in run.cohort:
        response, _ = run.clients[c].unmask(survived if c < 10 else dropped)
        seed_shares += [Share.from_bytes(r.share) for r in response.seed_shares if r.owner == 0]
        key_shares += [Share.from_bytes(r.share) for r in response.key_shares if r.owner == 0]
    assert (len(seed_shares), len(key_shares)) == (10, 10)
    for shares in (seed_shares, key_shares):
        with pytest.raises(ShareError, match="only 10 valid shares, 11 needed"):
            recover(shares, threshold=11, accept=lambda secret: True)
    with pytest.raises(ConfigError, match="threshold must be in \\[11, 20\\].*got 10"):
        SecAggConfig(threshold=10).for_cohort(20)


def test_messages_for_another_round_or_from_outside_are_rejected():
    run = Round(CONFIG)
    advert = run.message(0)
    run.deliver(dataclasses.replace(advert, round=0))
    run.deliver(dataclasses.replace(advert, client_id=99), client_id=99)
    run.deliver(advert, client_id=5)  # claims to be client 0 on client 5's connection
    run.server = run.server.receive_bytes(b"\x01\x63junk", client_id=6)
    zero_key = AdvertiseKeys(run.round, 1, bytes(32), run.message(1).mask_public)
    run.deliver(zero_key)
    reasons = [(r.client_id, r.reason) for r in run.server.rejections]
    assert reasons[0] == (0, "for round 0, this is round 1")
    assert reasons[1] == (99, "not in this round's cohort")
    assert reasons[2] == (5, "not a client message from 5")
    assert reasons[3][0] == 6 and "unknown message tag 99" in reasons[3][1]
    assert reasons[4][0] == 1 and "public key is invalid" in reasons[4][1]
    assert run.server.adverts == {}
    # An unmasking response for another round is refused; its shares are not used.
    run = Round(CONFIG)
    _to_masked_input(run)
    run.phase()
    run.advance()
    for c in run.cohort:
        response = run.message(c)
        run.deliver(dataclasses.replace(response, round=5) if c == 3 else response)
    assert _reasons(run.server, 3) == ["for round 5, this is round 1"]
    assert all(3 not in shares for shares in run.server.seed_shares.values())
    run.check_sum(run.finish(), run.cohort)
