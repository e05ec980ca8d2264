"""The weighted mean of client updates, the FedAvg reducer."""

from __future__ import annotations

import torch

__all__ = ["weighted_mean"]


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_k weights[k] * updates[k]`` for a ``[K, P]`` matrix and ``[K]`` weights.

    Weights are used as given (normalize them first, see
    :func:`fedloom.aggregate.weighting.client_weights`).
    """
    if updates.ndim != 2 or weights.shape != (updates.shape[0],):
        raise ValueError(
            f"expected updates [K, P] and weights [K], got {tuple(updates.shape)} and "
            f"{tuple(weights.shape)}"
        )
    if updates.shape[1] == 0:
        return updates.new_zeros(0)
    return weights.to(updates.dtype) @ updates
