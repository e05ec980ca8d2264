"""Which clients take part in a round.

Two schemes, both derived from (seed, round) alone, so a resumed run samples the same cohorts:

- ``"uniform"`` (the default): exactly ``m = max(round(C K), 1)`` of the ``K`` clients,
  uniformly without replacement (McMahan et al. 2017, Algorithm 1);
- ``"poisson"``: every client joins independently with probability ``q = C``, so the cohort
  size is Binomial(K, q): ``q K`` on average, and sometimes 0. This is the sampling that
  the privacy amplification of DP-FedAvg's Poisson accounting assumes (McMahan et al. 2018,
  Algorithm 1), and the accountant is told which scheme ran
  (:mod:`fedloom.privacy.accountant`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from fedloom.rng import numpy_rng

__all__ = ["SAMPLINGS", "Sampling", "cohort_size", "expected_cohort", "sample_cohort"]

Sampling = Literal["uniform", "poisson"]
SAMPLINGS: tuple[Sampling, ...] = ("uniform", "poisson")


def _check(fraction: float, sampling: str) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")


def cohort_size(num_clients: int, fraction: float) -> int:
    """``m = max(round(C * K), 1)`` clients per round (McMahan et al. 2017, Algorithm 1)."""
    _check(fraction, "uniform")
    return max(int(round(fraction * num_clients)), 1)


def expected_cohort(num_clients: int, fraction: float, sampling: Sampling = "uniform") -> float:
    """The expected cohort size: ``m`` exactly (uniform), ``q K`` (poisson, not rounded)."""
    _check(fraction, sampling)
    if sampling == "poisson":
        return fraction * num_clients
    return float(cohort_size(num_clients, fraction))


def sample_cohort(
    num_clients: int,
    fraction: float,
    *,
    seed: int,
    round: int,
    sampling: Sampling = "uniform",
) -> np.ndarray:
    """The sorted ids of the round's cohort (possibly empty under ``"poisson"``).

    ``"uniform"``: ``cohort_size(K, C)`` clients without replacement; ``"poisson"``: each
    client independently with probability ``C``. Derived from (seed, round) alone, so a
    resumed run samples the same cohorts.
    """
    _check(fraction, sampling)
    if sampling == "poisson":
        joins = numpy_rng(seed, "sample/poisson", round).random(num_clients) < fraction
        return np.flatnonzero(joins).astype(np.int64)
    size = cohort_size(num_clients, fraction)
    chosen = numpy_rng(seed, "sample", round).choice(num_clients, size=size, replace=False)
    return np.sort(chosen).astype(np.int64)
