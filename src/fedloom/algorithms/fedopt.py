"""Server optimizers on the averaged update (Reddi et al. 2021, "Adaptive Federated
Optimization"; FedAvgM: Hsu et al. 2019).

The averaged client update ``Delta_t`` is a pseudo-gradient (with the sign of a step). The
server feeds it to an optimizer instead of adding it: momentum (FedAvgM), Adagrad, Adam or
Yogi, with the paper's ``m, v`` recursions, ``v`` starting at ``tau^2`` and no bias
correction. ``tau`` bounds the adaptivity: it caps the per-coordinate step at
``server_lr * |m| / tau``.
"""

from __future__ import annotations

from fedloom.aggregate import Weighting, adagrad, adam, pipeline, server_momentum, yogi
from fedloom.algorithms.base import Algorithm

__all__ = ["fedadagrad", "fedadam", "fedavgm", "fedyogi"]


def fedavgm(
    *, server_lr: float = 1.0, momentum: float = 0.9, weighting: Weighting = "examples"
) -> Algorithm:
    """FedAvg with server momentum: ``v = beta v + Delta``, ``w += server_lr * v``."""
    return Algorithm(
        "fedavgm",
        aggregation=pipeline(weighting=weighting, server=server_momentum(server_lr, momentum)),
    )


def fedadagrad(
    *,
    server_lr: float = 0.1,
    beta1: float = 0.9,
    tau: float = 1e-3,
    weighting: Weighting = "examples",
) -> Algorithm:
    """FedAdagrad: ``v += Delta^2``."""
    server = adagrad(server_lr, beta1=beta1, tau=tau)
    return Algorithm("fedadagrad", aggregation=pipeline(weighting=weighting, server=server))


def fedadam(
    *,
    server_lr: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    weighting: Weighting = "examples",
) -> Algorithm:
    """FedAdam: ``v = beta2 v + (1 - beta2) Delta^2``."""
    server = adam(server_lr, beta1=beta1, beta2=beta2, tau=tau)
    return Algorithm("fedadam", aggregation=pipeline(weighting=weighting, server=server))


def fedyogi(
    *,
    server_lr: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.99,
    tau: float = 1e-3,
    weighting: Weighting = "examples",
) -> Algorithm:
    """FedYogi: ``v -= (1 - beta2) Delta^2 sign(v - Delta^2)``."""
    server = yogi(server_lr, beta1=beta1, beta2=beta2, tau=tau)
    return Algorithm("fedyogi", aggregation=pipeline(weighting=weighting, server=server))
