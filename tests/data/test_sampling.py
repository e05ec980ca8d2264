"""Cohort sampling: Poisson cohorts are Binomial(N, q) in size and derived from (seed, round)
alone; uniform cohorts are what they always were."""

import numpy as np
import pytest

from fedloom.data.sampling import cohort_size, expected_cohort, sample_cohort
from fedloom.rng import numpy_rng

N, Q, ROUNDS = 200, 0.1, 4000


def test_poisson_cohort_sizes_have_the_binomial_mean_and_variance():
    sizes = np.array(
        [len(sample_cohort(N, Q, seed=7, round=t, sampling="poisson")) for t in range(ROUNDS)]
    )
    mean, variance = N * Q, N * Q * (1 - Q)  # 20 and 18
    # standard errors over 4,000 rounds: sqrt(18 / 4000) = 0.067 for the mean and
    # 18 sqrt(2 / 3999) = 0.40 for the variance; the tolerances are five of them
    assert abs(sizes.mean() - mean) < 5 * np.sqrt(variance / ROUNDS)
    assert abs(sizes.var(ddof=1) - variance) < 5 * variance * np.sqrt(2 / (ROUNDS - 1))
    assert sizes.min() < 10 < 30 < sizes.max()  # the size really varies


def test_every_client_joins_a_poisson_cohort_with_probability_q():
    counts = np.zeros(N)
    for t in range(ROUNDS):
        counts[sample_cohort(N, Q, seed=3, round=t, sampling="poisson")] += 1
    # each count is Binomial(4000, 0.1): std 19; none is further than 5 std from 400
    assert np.abs(counts - ROUNDS * Q).max() < 5 * np.sqrt(ROUNDS * Q * (1 - Q))


def test_poisson_sampling_is_reproducible_from_seed_and_round():
    a = sample_cohort(N, Q, seed=1, round=5, sampling="poisson")
    assert np.array_equal(a, sample_cohort(N, Q, seed=1, round=5, sampling="poisson"))
    assert a.dtype == np.int64 and np.all(np.diff(a) > 0)  # sorted ids, no repeats
    assert not np.array_equal(a, sample_cohort(N, Q, seed=1, round=6, sampling="poisson"))
    assert not np.array_equal(a, sample_cohort(N, Q, seed=2, round=5, sampling="poisson"))


def test_a_poisson_cohort_can_be_empty_or_everyone():
    sizes = [len(sample_cohort(5, 0.1, seed=0, round=t, sampling="poisson")) for t in range(50)]
    assert 0 in sizes  # (1 - 0.1)^5 = 59% of rounds
    assert len(sample_cohort(5, 1.0, seed=0, round=0, sampling="poisson")) == 5


def test_uniform_sampling_is_unchanged_and_the_expected_cohort_of_each_scheme():
    chosen = numpy_rng(4, "sample", 9).choice(50, size=5, replace=False)
    assert np.array_equal(sample_cohort(50, 0.1, seed=4, round=9), np.sort(chosen))
    assert expected_cohort(50, 0.1) == cohort_size(50, 0.1) == 5
    assert expected_cohort(25, 0.1, "poisson") == 2.5  # q N, not rounded
    with pytest.raises(ValueError, match="sampling must be one of uniform, poisson"):
        sample_cohort(10, 0.5, seed=0, round=0, sampling="bernoulli")  # type: ignore[arg-type]
