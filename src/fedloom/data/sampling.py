"""Which clients take part in a round."""

from __future__ import annotations

import numpy as np

from fedloom.rng import numpy_rng

__all__ = ["cohort_size", "sample_cohort"]


def cohort_size(num_clients: int, fraction: float) -> int:
    """``m = max(round(C * K), 1)`` clients per round (McMahan et al. 2017, Algorithm 1)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(int(round(fraction * num_clients)), 1)


def sample_cohort(num_clients: int, fraction: float, *, seed: int, round: int) -> np.ndarray:
    """The sorted ids of the round's cohort, uniformly without replacement.

    Derived from (seed, round) alone, so a resumed run samples the same cohorts.
    """
    size = cohort_size(num_clients, fraction)
    chosen = numpy_rng(seed, "sample", round).choice(num_clients, size=size, replace=False)
    return np.sort(chosen).astype(np.int64)
