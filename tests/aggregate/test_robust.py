"""Robust aggregators: hand-computed cases, NumPy references, properties and edge cases."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedloom.aggregate import aggregate_stack, clip, pipeline
from fedloom.aggregate.robust import (
    Bulyan,
    CenteredClipping,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    Mean,
    TrimmedMean,
    pairwise_sq_distances,
)

TINY_MEMORY = 64  # forces one or two columns per chunk: the chunked paths are exercised


def _u(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _ones(k):
    return torch.full((k,), 1.0 / k)


def NormBound(max_norm, inner=None):
    """Norm bounding (Sun et al. 2019) as it is now: a clip stage in front of the rule."""
    return _ClipThen(pipeline(per_client=clip(max_norm), reduce=inner or Mean()))


class _ClipThen:
    def __init__(self, p):
        self.pipeline = p
        self.name = f"clip -> {p.reduce.name}"

    def aggregate(self, updates, weights, state):
        return aggregate_stack(self.pipeline, updates, weights)

    def __call__(self, updates, weights):
        return self.aggregate(updates, weights, None)[0]


def test_median_odd_and_even_counts():
    updates = _u([[1.0, 10.0], [3.0, -2.0], [2.0, 0.0], [100.0, 5.0]])
    # even count: the mean of the two middle values per coordinate
    assert CoordinateMedian().combine(updates, _ones(4)).tolist() == [2.5, 2.5]
    assert CoordinateMedian().combine(updates[:3], _ones(3)).tolist() == [2.0, 0.0]


def test_trimmed_mean_by_hand_and_too_much_trimming():
    updates = _u([[1.0], [2.0], [3.0], [4.0], [1000.0]])
    assert TrimmedMean(beta=0.2).combine(updates, _ones(5)).item() == pytest.approx(3.0)
    assert TrimmedMean(beta=0.0).combine(updates, _ones(5)).item() == pytest.approx(202.0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 0.5\)"):
        TrimmedMean(beta=0.5)
    assert TrimmedMean(beta=0.4).min_updates() == 1
    assert TrimmedMean(beta=0.49).combine(_u([[1.0], [5.0], [9.0]]), _ones(3)).item() == 5.0


def test_krum_and_multi_krum_by_hand():
    # four honest points near the origin, one far away; f = 1: neighbours = 5 - 1 - 2 = 2
    updates = _u([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [50.0, 50.0]])
    distances = pairwise_sq_distances(updates)
    assert distances[0, 3].item() == 2.0 and distances[4, 0].item() == 5000.0
    # scores: each corner has two neighbours at squared distance 1 -> score 2
    chosen = Krum(f=1).select(updates)
    assert chosen.tolist() == [0]  # ties broken by position
    assert Krum(f=1).combine(updates, _ones(5)).tolist() == [0.0, 0.0]
    assert Krum(f=1, m=4).combine(updates, _ones(5)).tolist() == [0.5, 0.5]


def test_krum_and_bulyan_refuse_too_many_assumed_attackers():
    updates = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"more than 2f \+ 2 = 6 updates, got 6"):
        Krum(f=2).combine(updates, _ones(6))
    with pytest.raises(ValueError, match=r"4f \+ 3 = 7 updates, got 6"):
        Bulyan(f=1).combine(updates, _ones(6))
    with pytest.raises(ValueError, match="selects m=8"):
        Krum(f=1, m=8).combine(updates, _ones(6))


def test_bulyan_ignores_outliers_and_equals_the_mean_when_f_is_zero():
    torch.manual_seed(0)
    honest = torch.randn(9, 4) * 0.1
    attacked = torch.cat([honest, torch.full((2, 4), 100.0)])  # K = 11 >= 4 * 2 + 3
    result = Bulyan(f=2).combine(attacked, _ones(11))
    assert result.abs().max() < 0.3
    assert torch.allclose(Bulyan(f=0).combine(honest, _ones(9)), honest.mean(0), atol=1e-6)


def test_geometric_median_of_symmetric_points_and_on_a_line():
    square = _u([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [0.0, 0.0]])
    assert torch.allclose(GeometricMedian().combine(square, _ones(5)), torch.zeros(2), atol=1e-4)
    # on a line the geometric median is the median; far outliers do not move it
    line = _u([[0.0], [1.0], [2.0], [1000.0], [-3.0]])
    assert GeometricMedian(tol=1e-10).combine(line, _ones(5)).item() == pytest.approx(1.0, abs=1e-3)
    # weights shift it: a weight over one half makes that point the median
    weights = torch.tensor([0.6, 0.1, 0.1, 0.1, 0.1])
    assert GeometricMedian(tol=1e-10).combine(line, weights).item() == pytest.approx(0.0, abs=1e-3)


def test_norm_bound_clips_then_averages():
    updates = _u([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    clipped, _ = NormBound(max_norm=1.0).aggregate(updates, _ones(2), None)
    assert torch.allclose(clipped, torch.tensor([(0.6 + 0.3) / 2, (0.8 + 0.4) / 2]))
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        NormBound(max_norm=0.0)


def test_centered_clipping_by_hand_and_its_memory():
    rule = CenteredClipping(tau=1.0, iterations=1)
    state = rule.init(torch.zeros(2))
    updates = _u([[0.5, 0.0], [0.0, 10.0]])
    v, state = rule.aggregate(updates, _ones(2), state)
    # from v = 0: the first update is inside the radius, the second is clipped to norm 1
    assert torch.allclose(v, torch.tensor([0.25, 0.5]))
    # the next round starts from v, not from zero
    v2, _ = rule.aggregate(_u([[0.25, 0.5], [0.25, 0.5]]), _ones(2), state)
    assert torch.allclose(v2, torch.tensor([0.25, 0.5]))


def test_one_huge_update_moves_the_mean_anywhere_but_not_the_robust_rules():
    torch.manual_seed(1)
    honest = torch.randn(9, 50) * 0.01
    attacked = torch.cat([honest, torch.full((1, 50), 1e6)])
    weights = _ones(10)
    assert Mean().combine(attacked, weights).abs().min() > 1e4
    for rule in (
        CoordinateMedian(),
        TrimmedMean(beta=0.1),
        Krum(f=1),
        Krum(f=1, m=5),
        Bulyan(f=1),
        GeometricMedian(),
        NormBound(max_norm=0.1),
    ):
        assert rule(attacked, weights).abs().max() < 0.1, rule.name
    v, _ = CenteredClipping(tau=0.1).aggregate(attacked, weights, None)
    assert v.abs().max() < 0.1


matrices = arrays(
    np.float32,
    st.tuples(st.integers(1, 9), st.integers(1, 7)),
    elements=st.floats(-100, 100, width=32),
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(matrices, st.randoms(use_true_random=False))
def test_coordinate_rules_agree_with_numpy_and_are_permutation_invariant(values, random):
    updates = torch.from_numpy(values)
    k = len(values)
    order = list(range(k))
    random.shuffle(order)
    median = CoordinateMedian(memory_bytes=TINY_MEMORY).combine(updates, _ones(k))
    np.testing.assert_allclose(median.numpy(), np.median(values, axis=0), rtol=1e-6, atol=1e-5)
    assert torch.equal(median, CoordinateMedian().combine(updates[order], _ones(k)))
    beta = 0.2
    cut = math.floor(beta * k)
    trimmed = TrimmedMean(beta, memory_bytes=TINY_MEMORY).combine(updates, _ones(k))
    reference = np.sort(values, axis=0)[cut : k - cut].mean(0)
    np.testing.assert_allclose(trimmed.numpy(), reference, rtol=1e-5, atol=1e-4)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(matrices)
def test_distances_and_clip_bounds(values):
    updates = torch.from_numpy(values)
    distances = pairwise_sq_distances(updates, memory_bytes=TINY_MEMORY)
    reference = ((values[:, None, :].astype(np.float64) - values[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(distances.numpy(), reference, rtol=1e-6, atol=1e-6)
    clipped, _ = NormBound(max_norm=2.0).aggregate(updates, _ones(len(values)), None)
    assert float(clipped.norm()) <= 2.0 + 1e-4  # a mean of vectors of norm <= 2


def test_chunked_and_unchunked_results_agree():
    torch.manual_seed(2)
    updates = torch.randn(12, 301)
    weights = torch.rand(12)
    weights /= weights.sum()
    for small, large in (
        (CoordinateMedian(memory_bytes=TINY_MEMORY), CoordinateMedian()),
        (TrimmedMean(0.2, memory_bytes=TINY_MEMORY), TrimmedMean(0.2)),
        (Krum(f=2, m=3, memory_bytes=TINY_MEMORY), Krum(f=2, m=3)),
        (Bulyan(f=2, memory_bytes=TINY_MEMORY), Bulyan(f=2)),
        (GeometricMedian(memory_bytes=TINY_MEMORY), GeometricMedian()),
    ):
        assert torch.allclose(
            small.combine(updates, weights), large.combine(updates, weights), atol=1e-5
        )


@pytest.mark.parametrize("seed", range(12))
def test_rules_are_equivariant_to_scaling_and_shifting(seed):
    """rule(c U + b) = c rule(U) + b for c > 0: no rule depends on units or origin.

    Random continuous updates: with exact ties (equally spaced values) rank-based rules may
    break a tie differently after rounding, which is a tie, not a broken equivariance.
    """
    generator = torch.Generator().manual_seed(seed)
    k = int(torch.randint(7, 10, (1,), generator=generator))
    updates = torch.randn(k, 5, generator=generator, dtype=torch.float64) * 3
    scale = float(torch.empty(1).uniform_(0.5, 3.0, generator=generator))
    shift = float(torch.empty(1).uniform_(-5.0, 5.0, generator=generator))
    values = updates.numpy()
    weights = torch.rand(k, generator=generator, dtype=torch.float64)
    weights /= weights.sum()
    for rule in (
        Mean(),
        CoordinateMedian(),
        TrimmedMean(0.2),
        Krum(f=1, m=2),
        Bulyan(f=1),
        GeometricMedian(tol=1e-12, max_iter=500),
    ):
        moved = rule(updates * scale + shift, weights)
        expected = rule(updates, weights) * scale + shift
        assert torch.allclose(moved, expected, atol=1e-3 * scale * (1 + values.std())), rule.name
