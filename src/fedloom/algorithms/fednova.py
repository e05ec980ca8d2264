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

In the pipeline that is two stages around the mean: a per-client stage divides each update by
``||a_k||_1`` and tallies ``p_k ||a_k||_1``; an aggregate stage multiplies the mean by the
tally over the total weight, ``tau_eff``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from fedloom.aggregate import (
    Cohort,
    Contribution,
    PerClient,
    RoundInfo,
    Weighting,
    pipeline,
    scale,
)
from fedloom.algorithms.base import Algorithm

__all__ = ["NormalizeWork", "RescaleByWork", "fednova"]

WORK = "fednova/work"


@dataclass(frozen=True)
class NormalizeWork(PerClient):
    """Per client: ``u_k / ||a_k||_1``; tallies ``p_k ||a_k||_1`` for :class:`RescaleByWork`."""

    statistics = frozenset({"work_norm"})

    @property
    def name(self) -> str:
        return "fednova/normalize"

    def update(self, contribution: Contribution, state: Any, *, info: RoundInfo) -> Contribution:
        norm = contribution.statistics.get("work_norm")
        if norm is None or not norm > 0:
            raise ValueError(
                f"FedNova needs each client's work_norm > 0; client {contribution.client_id} "
                f"reported {norm!r}"
            )
        tallies = {**contribution.tallies, WORK: contribution.weight * norm}
        return replace(contribution, update=contribution.update / norm, tallies=tallies)


@dataclass(frozen=True)
class RescaleByWork:
    """On the aggregate: ``Delta * tau_eff``, ``tau_eff = sum_k p_k ||a_k||_1 / sum_k p_k``."""

    kind = "server"

    @property
    def name(self) -> str:
        return "fednova/rescale"

    def init(self, params: torch.Tensor) -> Any:
        return ()

    def update(
        self,
        delta: torch.Tensor,
        state: Any,
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, Any]:
        if WORK not in cohort.tallies:
            raise ValueError(
                f"FedNova's rescaling needs the tally {WORK!r} of its per-client stage "
                "NormalizeWork; put that stage in the pipeline's per_client stages"
            )
        return delta * (cohort.tallies[WORK] / cohort.total_weight), state


def fednova(*, server_lr: float = 1.0, weighting: Weighting = "examples") -> Algorithm:
    """FedAvg with updates normalized by each client's local work (vanilla, momentum or
    proximal local SGD)."""
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    aggregation = pipeline(
        weighting=weighting,
        per_client=NormalizeWork(),
        server=(RescaleByWork(), scale(server_lr)),
    )
    return Algorithm(name="fednova", aggregation=aggregation)
