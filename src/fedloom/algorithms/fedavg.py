"""Federated Averaging and FedSGD (McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", Algorithm 1)."""

from __future__ import annotations

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm

__all__ = ["fedavg", "fedsgd"]


def fedavg(*, server_lr: float = 1.0, weighting: Weighting = "examples") -> Algorithm:
    """FedAvg: clients run local SGD; the server averages their updates, weighted by ``n_k``.

    ``server_lr = 1`` is the paper's algorithm (the new model is the weighted average of the
    client models); other values scale the averaged update.

    >>> fedavg().name
    'fedavg'
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm("fedavg", aggregation=pipeline(weighting=weighting, server=scale(server_lr)))


def fedsgd(*, server_lr: float = 1.0, weighting: Weighting = "examples") -> Algorithm:
    """FedSGD: FedAvg with one full-batch gradient step per client (E = 1, B = full).

    With example weighting, one round equals one step of full-batch gradient descent on the
    union of the participants' data.
    """
    base = fedavg(server_lr=server_lr, weighting=weighting)
    return Algorithm(
        name="fedsgd",
        aggregation=base.aggregation,
        local_overrides={"epochs": 1, "steps": None, "batch_size": None},
    )
