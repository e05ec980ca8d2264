"""FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

Each client minimizes ``F_k(w) + mu/2 ||w - w_t||^2``: the proximal term limits how far
local work drifts from the broadcast model on non-IID data. FedProx also *keeps* the partial
work of stragglers instead of dropping them; in fedloom that is the simulation's straggler
policy (:class:`fedloom.engine.LocalWork`), so it applies to any algorithm.
"""

from __future__ import annotations

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm
from fedloom.client import ClientProgram, ProximalTerm

__all__ = ["fedprox"]


def fedprox(
    mu: float = 0.01, *, server_lr: float = 1.0, weighting: Weighting = "examples"
) -> Algorithm:
    """FedAvg with the proximal term ``mu/2 ||w - w_t||^2`` in every client's objective.

    ``mu = 0`` is FedAvg. The paper tunes ``mu`` in {0.001, 0.01, 0.1, 1}.
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm(
        name="fedprox",
        program=ClientProgram(terms=(ProximalTerm(mu),)),
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
    )
