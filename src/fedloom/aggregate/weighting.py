"""How much each client's update counts in the average.

- ``"examples"`` (default, McMahan et al. 2017): ``n_k / n``. Unbiased for the global
  empirical risk, but large clients dominate (the "tyranny of the majority").
- ``"uniform"``: ``1 / m``. Every participant counts the same; fairer to small clients,
  biased towards them when objectives differ.
- ``"inverse_variance"``: ``1 / v_k``, where ``v_k`` is the variance of client k's update
  that the client estimates from its own gradients (``sigma_k^2 / n_k``, see
  :func:`fedloom.client.gradient_noise`). When every client's data has the same per-example
  noise this is example weighting again; it down-weights noisy clients. The catch: a small
  client whose data is uniform (one label, near-duplicates) has a tiny gradient variance
  and gets an outsized weight, although its update is the most biased of all.
- a callable ``results -> weights``: anything else (normalized here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fedloom.types import ClientResult

__all__ = ["WEIGHTINGS", "Weighting", "client_weights"]

Weighting = str | Callable[[Sequence[ClientResult]], Sequence[float] | torch.Tensor]

WEIGHTINGS = ("examples", "uniform", "inverse_variance")

# The smallest variance believed: a client reporting 0 would otherwise take all the weight.
MIN_VARIANCE = 1e-30


def _inverse_variances(results: Sequence[ClientResult]) -> torch.Tensor:
    variances = []
    for r in results:
        v = r.statistics.get("update_variance")
        if v is None or not math.isfinite(v) or v < 0:
            raise ValueError(
                f"inverse_variance weighting needs each client's update_variance statistic "
                f"(a finite number >= 0, from at least 2 local steps); client {r.client_id} "
                f"reported {v!r} after {r.num_steps} steps"
            )
        variances.append(max(v, MIN_VARIANCE))
    return 1.0 / torch.tensor(variances, dtype=torch.float64)


def client_weights(results: Sequence[ClientResult], weighting: Weighting) -> torch.Tensor:
    """Normalized float32 weights, one per result, summing to 1."""
    if not results:
        raise ValueError("cannot weight an empty cohort")
    if weighting == "examples":
        raw = torch.tensor([r.num_examples for r in results], dtype=torch.float64)
    elif weighting == "uniform":
        raw = torch.ones(len(results), dtype=torch.float64)
    elif weighting == "inverse_variance":
        raw = _inverse_variances(results)
    elif callable(weighting):
        raw = torch.as_tensor(weighting(results), dtype=torch.float64)
    else:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {WEIGHTINGS} or a function")
    if raw.shape != (len(results),) or not torch.all(torch.isfinite(raw)) or torch.any(raw < 0):
        raise ValueError(f"weights must be {len(results)} finite non-negative numbers, got {raw}")
    if raw.sum() <= 0:
        raise ValueError("weights sum to zero")
    return (raw / raw.sum()).to(torch.float32)
