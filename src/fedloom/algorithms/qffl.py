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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedloom.aggregate import Weighting
from fedloom.algorithms.base import Algorithm
from fedloom.client import LocalTraining
from fedloom.types import ClientResult

__all__ = ["QFFLNormalization", "qffl"]

MIN_LOSS = 1e-10  # F_k = 0 would give the client h_k = 0 and a 0/0 update


@dataclass(frozen=True)
class QFFLNormalization:
    """q-FedAvg's aggregation as normalized updates and weights for a weighted mean.

    ``sum_k p'_k u'_k`` with ``p'_k = p_k h_k / sum_j p_j h_j`` and
    ``u'_k = L F_k^q u_k / h_k`` is ``sum_k p_k F_k^q L u_k / sum_j p_j h_j``, the paper's step.
    """

    q: float
    lipschitz: float | None = None

    def __call__(
        self,
        results: Sequence[ClientResult],
        updates: torch.Tensor,
        weights: torch.Tensor,
        settings: LocalTraining,
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        lipschitz = self.lipschitz if self.lipschitz is not None else 1.0 / settings.lr
        losses = []
        for r in results:
            loss = r.statistics.get("initial_loss")
            if loss is None or not loss >= 0:
                raise ValueError(
                    f"q-FFL needs each client's initial_loss >= 0; client {r.client_id} "
                    f"reported {loss!r}"
                )
            losses.append(max(loss, MIN_LOSS))
        f = torch.tensor(losses, dtype=torch.float64)
        u = updates.double()
        squared_norms = (lipschitz**2) * u.pow(2).sum(1)
        fq = f.pow(self.q)
        h = self.q * f.pow(self.q - 1) * squared_norms + lipschitz * fq
        p = weights.double() * h
        new_weights = p / p.sum()
        new_updates = u * (lipschitz * fq / h)[:, None]
        return new_updates.to(updates.dtype), new_weights.to(weights.dtype), 1.0


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
    return Algorithm(
        name="qffl",
        weighting=weighting,
        normalization=QFFLNormalization(q, lipschitz),
        normalization_statistics=frozenset({"initial_loss"}),
    )
