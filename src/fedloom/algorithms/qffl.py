"""q-FFL / q-FedAvg (Li et al. 2020, "Fair Resource Allocation in Federated Learning",
Algorithm 2).

q-FFL minimizes ``sum_k p_k F_k^(q+1) / (q+1)``: with ``q > 0`` clients with a high loss
count more, which evens out accuracy across clients (``q = 0`` is FedAvg's objective).
Each client reports its loss ``F_k`` at the broadcast model; with ``L = 1/lr`` (the paper's
Lipschitz estimate) and ``Delta w_k = L (w_t - w_k)``:

    Delta_k = F_k^q Delta w_k,   h_k = q F_k^(q-1) ||Delta w_k||^2 + L F_k^q,
    w_{t+1} = w_t - sum_k p_k Delta_k / sum_k p_k h_k.

The paper samples clients with probability ``p_k`` and averages uniformly; fedloom samples
uniformly, so the weights ``p_k`` (example weighting by default) enter both sums instead.

In the pipeline q-FFL is one per-client stage in front of the mean (:class:`QFFLReweight`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from fedloom.aggregate import Contribution, PerClient, RoundInfo, Weighting, pipeline
from fedloom.algorithms.base import Algorithm

__all__ = ["QFFLReweight", "qffl"]

MIN_LOSS = 1e-10  # F_k = 0 would give the client h_k = 0 and a 0/0 update


@dataclass(frozen=True)
class QFFLReweight(PerClient):
    """q-FedAvg's step as a weighted mean: ``u'_k = L F_k^q u_k / h_k``, ``p'_k = p_k h_k``.

    The mean ``sum_k p'_k u'_k / sum_j p'_j`` is ``sum_k p_k F_k^q L u_k / sum_j p_j h_j``,
    the paper's step. ``lipschitz`` is ``L``; by default ``1 / lr`` of the round's local
    settings (:class:`~fedloom.aggregate.RoundInfo`), as in the paper.
    """

    q: float
    lipschitz: float | None = None
    statistics = frozenset({"initial_loss"})

    @property
    def name(self) -> str:
        return "qffl"

    def update(self, contribution: Contribution, state: Any, *, info: RoundInfo) -> Contribution:
        lipschitz = self.lipschitz
        if lipschitz is None:
            if not info.local_lr:
                raise ValueError(
                    "q-FFL needs L: pass lipschitz=..., or the clients' learning rate "
                    f"(RoundInfo.local_lr, got {info.local_lr!r})"
                )
            lipschitz = 1.0 / info.local_lr
        loss = contribution.statistics.get("initial_loss")
        if loss is None or not loss >= 0:
            raise ValueError(
                f"q-FFL needs each client's initial_loss >= 0; client {contribution.client_id} "
                f"reported {loss!r}"
            )
        f = max(loss, MIN_LOSS)
        u = contribution.update.double()
        squared_norm = lipschitz**2 * float(u.pow(2).sum())
        fq = f**self.q
        h = self.q * f ** (self.q - 1) * squared_norm + lipschitz * fq
        return replace(
            contribution,
            update=(u * (lipschitz * fq / h)).to(torch.float32),
            weight=contribution.weight * h,
        )


def qffl(
    q: float = 1.0, *, lipschitz: float | None = None, weighting: Weighting = "examples"
) -> Algorithm:
    """q-FedAvg with fairness parameter ``q`` (0 is FedAvg; the paper uses 0.001 to 15).

    ``lipschitz`` is ``L``; by default ``1 / lr`` of the local settings, as in the paper.
    """
    if q < 0:
        raise ValueError(f"q must be >= 0, got {q}")
    if lipschitz is not None and lipschitz <= 0:
        raise ValueError(f"lipschitz must be > 0, got {lipschitz}")
    stage = QFFLReweight(q, lipschitz)
    return Algorithm(name="qffl", aggregation=pipeline(weighting=weighting, per_client=stage))
