"""How much each client's update counts in the average.

- ``"examples"`` (default, McMahan et al. 2017): ``n_k / n``. Unbiased for the global
  empirical risk, but large clients dominate (the "tyranny of the majority").
- ``"uniform"``: ``1 / m``. Every participant counts the same; fairer to small clients,
  biased towards them when objectives differ.
- a callable ``results -> weights``: anything else (normalized here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fedloom.types import ClientResult

__all__ = ["WEIGHTINGS", "Weighting", "client_weights"]

Weighting = str | Callable[[Sequence[ClientResult]], Sequence[float] | torch.Tensor]

WEIGHTINGS = ("examples", "uniform")


def client_weights(results: Sequence[ClientResult], weighting: Weighting) -> torch.Tensor:
    """Normalized float32 weights, one per result, summing to 1."""
    if not results:
        raise ValueError("cannot weight an empty cohort")
    if weighting == "examples":
        raw = torch.tensor([r.num_examples for r in results], dtype=torch.float64)
    elif weighting == "uniform":
        raw = torch.ones(len(results), dtype=torch.float64)
    elif callable(weighting):
        raw = torch.as_tensor(weighting(results), dtype=torch.float64)
    else:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {WEIGHTINGS} or a function")
    if raw.shape != (len(results),) or not torch.all(torch.isfinite(raw)) or torch.any(raw < 0):
        raise ValueError(f"weights must be {len(results)} finite non-negative numbers, got {raw}")
    if raw.sum() <= 0:
        raise ValueError("weights sum to zero")
    return (raw / raw.sum()).to(torch.float32)
