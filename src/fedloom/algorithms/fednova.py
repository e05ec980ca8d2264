"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization").

When clients do unequal amounts of local work, FedAvg's weighted average of their updates
weights each client's objective by ``p_k tau_k`` rather than ``p_k``: it converges to the
optimum of the wrong objective. FedNova divides each update by the client's work
``||a_k||_1`` (the number of gradient steps it is worth, see
:func:`fedloom.client.work_norm`), averages these per-step directions with ``p_k``, and
rescales by ``tau_eff = sum_k p_k ||a_k||_1``:
``w_{t+1} = w_t + tau_eff * sum_k p_k u_k / ||a_k||_1``.
With equal work it is FedAvg.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedloom.aggregate import Weighting, scale
from fedloom.algorithms.base import Algorithm
from fedloom.client import LocalTraining
from fedloom.types import ClientResult

__all__ = ["fednova", "fednova_normalization"]


def fednova_normalization(
    results: Sequence[ClientResult],
    updates: torch.Tensor,
    weights: torch.Tensor,
    settings: LocalTraining,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-step updates ``u_k / ||a_k||_1`` and the factor ``tau_eff``."""
    norms = []
    for r in results:
        norm = r.statistics.get("work_norm")
        if norm is None or not norm > 0:
            raise ValueError(
                f"FedNova needs each client's work_norm > 0; client {r.client_id} reported {norm!r}"
            )
        norms.append(norm)
    a = torch.tensor(norms, dtype=torch.float64)
    tau_eff = float((weights.double() * a).sum())
    return updates / a.to(updates.dtype)[:, None], weights, tau_eff


def fednova(*, server_lr: float = 1.0, weighting: Weighting = "examples") -> Algorithm:
    """FedAvg with updates normalized by each client's local work (vanilla, momentum or
    proximal local SGD)."""
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm(
        name="fednova",
        weighting=weighting,
        normalization=fednova_normalization,
        normalization_statistics=frozenset({"work_norm"}),
        server=scale(server_lr),
    )
