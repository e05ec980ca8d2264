"""The protocol end to end on 20 clients: exact sums with dropouts after every phase (complete
graph and SecAgg+), clean failure below the threshold, masked vectors uniform over the
group, fresh masks every round, and the server never holding both masks of a client."""

import numpy as np
import pytest
from _secagg_harness import Round
from scipy.stats import chisquare

from fedloom.privacy.secagg import (
    MaskedInput,
    Phase,
    SecAggAborted,
    SecAggConfig,
    simulate_round,
)
from fedloom.privacy.secagg.messages import unpack_vector

A, S, M = Phase.ADVERTISE, Phase.SHARE, Phase.MASKED
# Who drops after which phase (they send that phase's message, then nothing). Clients that
# drop after sending their masked input are still in the sum; the others are not.
DROPOUTS = {
    "0%": {},
    "10%": {3: A, 11: S},
    "30%": {3: A, 16: A, 5: S, 11: S, 8: M, 19: M},
}
GRAPHS = {
    "complete": SecAggConfig(clip_range=0.5),
    "secagg+k12": SecAggConfig(clip_range=0.5, neighbors=12),
}
P_VALUE = 1e-3  # uniformity: a chi-square p-value below this fails


def _survivors(n, drops):
    return [c for c in range(n) if drops.get(c) not in (A, S)]


@pytest.mark.parametrize("rate", DROPOUTS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_decoded_sum_equals_plain_sum_with_dropouts(graph, rate):
    """The decoded sum is the survivors' plain float sum within n * step per coordinate, the
    integer sum is exact, and so is the example count (20 clients, t = 11 for the complete
    graph, t = 7 of 13 holders with 12 neighbors)."""
    config, drops = GRAPHS[graph], DROPOUTS[rate]
    run = Round(config, n=20, num_params=300, seed=4, round=2)
    result = simulate_round(config, run.updates, run.counts, seed=4, round=2, drop_after=drops)
    run.check_sum(result, _survivors(20, drops))
    assert result.error_bound == pytest.approx(len(result.survivor_ids) * 1.0 / (2**27 - 1))
    assert result.rejections == ()


@pytest.mark.parametrize("graph", GRAPHS)
def test_server_never_holds_both_masks_of_a_client(graph):
    """With 30% dropouts after different phases, the server's shares: self-mask seed shares
    only of survivors, mask-key shares only of dropped clients, never both for one."""
    run = Round(GRAPHS[graph], n=20)
    drops = DROPOUTS["30%"]
    for phase in (A, S, M, Phase.UNMASK):
        run.phase(skip=[c for c, last in drops.items() if _order(last) < _order(phase)])
        if phase is not Phase.UNMASK:
            run.advance()
    result = run.finish()
    run.check_sum(result, _survivors(20, drops))
    seed_owners, key_owners = set(run.server.seed_shares), set(run.server.key_shares)
    assert not seed_owners & key_owners
    assert seed_owners == set(result.survivor_ids)
    assert key_owners == {5, 11}  # shared keys, sent no masked input


def _order(phase):
    return [A, S, M, Phase.UNMASK].index(phase)


def test_full_size_update_n20():
    """MNIST 2NN's P = 199,210 with 20 clients and 30% dropouts: exact, in seconds."""
    config = SecAggConfig(clip_range=0.5)
    run = Round(config, n=20, num_params=199_210, seed=1, round=7)
    drops = DROPOUTS["30%"]
    result = simulate_round(config, run.updates, run.counts, seed=1, round=7, drop_after=drops)
    run.check_sum(result, _survivors(20, drops))


def _uniformity_p_value(vector, bits, top=4):
    counts = np.bincount((vector >> np.uint64(bits - top)).astype(np.int64), minlength=2**top)
    return chisquare(counts).pvalue


@pytest.mark.parametrize("phase_failing", [S, M, Phase.UNMASK])
def test_below_threshold_the_round_fails_and_the_server_holds_only_masked_vectors(phase_failing):
    """10 of 20 clients (t = 11) go silent before ``phase_failing`` closes: the round aborts
    with the reason, and the server holds masked vectors (uniform over the group, unrelated
    to the inputs) and fewer than t shares of any client's secrets."""
    run = Round(SecAggConfig(clip_range=0.5), n=20, num_params=20_000)
    silent = range(10)
    for phase in (A, S, M, Phase.UNMASK):
        run.phase(skip=silent if phase is phase_failing else ())
        if phase is phase_failing:
            break
        run.advance()
    with pytest.raises(SecAggAborted, match="10 clients .*fewer than the threshold 11") as aborted:
        run.finish() if phase_failing is Phase.UNMASK else run.advance()
    assert aborted.value.phase == phase_failing.value and aborted.value.round == 1
    server = run.server
    assert all(len(shares) < 11 for shares in server.seed_shares.values())
    assert not server.key_shares
    if phase_failing is not S:
        masked, plain = server.masked_sum, sum(run.quantized(c) for c in range(10, 20))
        assert np.mean(masked[:-1] == plain) < 1e-3
        assert _uniformity_p_value(masked, 32) > P_VALUE
    with pytest.raises(SecAggAborted):
        drops = dict.fromkeys(range(10), S)
        simulate_round(run.config, run.updates, run.counts, seed=0, round=1, drop_after=drops)


def test_a_masked_vector_alone_is_uniform_over_the_group():
    """One client's masked input of an all-zero update (every coordinate the same group
    element before masking: the worst case) passes a chi-square test of uniformity on its top
    4 bits (16 cells, 199,211 values, p > 1e-3, fixed secrets so the test is deterministic);
    its unmasked quantized vector fails the same test."""
    run = Round(SecAggConfig(clip_range=0.5), n=5, num_params=199_210)
    run.updates[0] = np.zeros(199_210)
    for _ in range(2):
        run.phase()
        run.advance()
    message = run.message(0)
    assert isinstance(message, MaskedInput)
    masked = unpack_vector(message.masked, length=199_211, bits=32)
    assert _uniformity_p_value(masked, 32) > P_VALUE
    quantized = np.append(run.quantized(0), run.counts[0]).astype(np.uint64)
    assert _uniformity_p_value(quantized, 32) < 1e-12


def test_two_rounds_never_reuse_a_mask():
    """The same clients (same secret seeds) with the same inputs in rounds 1 and 2: every
    client's masked vector, and so its mask, differs in nearly every coordinate, and both
    rounds unmask to the right sum."""
    masked = {}
    for round in (1, 2):
        run = Round(SecAggConfig(clip_range=0.5), n=8, num_params=5000, round=round)
        for _ in range(2):
            run.phase()
            run.advance()
        masked[round] = {c: run.message(c) for c in run.cohort}
        for message in masked[round].values():
            run.deliver(message)
        run.advance()
        run.phase()
        run.check_sum(run.finish(), run.cohort)
    for c in run.cohort:
        first, second = (unpack_vector(masked[r][c].masked, length=5001, bits=32) for r in (1, 2))
        assert np.mean(first == second) < 1e-3
