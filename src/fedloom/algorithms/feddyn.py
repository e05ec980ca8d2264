"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization").

Each client k minimizes a dynamically regularized objective,

    L_k(w) - <g_k, w> + alpha/2 ||w - w_t||^2,

where ``g_k`` (zero at first) is the client's linear term, updated after each round it takes
part in: ``g_k <- g_k - alpha (w_k - w_t)``. At a fixed point the local optimum is the global
one, so local work no longer drifts (the paper's Algorithm 1). The server keeps
``h <- h - alpha (1/N) sum_{k in P_t} (w_k - w_t)`` and sets
``w_{t+1} = mean_{k in P_t} w_k - h / alpha``.

In fedloom the three parts are the three extension points: the proximal term is an objective
term, ``-<g_k, w>`` is a gradient correction ``-g_k`` sent with each client's plan (the
mechanism SCAFFOLD uses), ``g_k`` lives in the client-state store (``"feddyn/g"``), and ``h``
is the state of an aggregate stage of the pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import torch
from annotated_types import Gt

from fedloom.aggregate import Cohort, RoundInfo, Weighting, pipeline
from fedloom.algorithms.base import Algorithm
from fedloom.client import ClientProgram, LocalTraining, ProximalTerm
from fedloom.client.portable import portable
from fedloom.types import ClientResult

__all__ = ["LINEAR_TERM", "DynamicRegularizer", "ServerCorrection", "feddyn"]

LINEAR_TERM = "feddyn/g"
"""The client-state store entry holding a client's linear term ``g_k``."""


@portable("feddyn/regularizer")
@dataclass(frozen=True)
class DynamicRegularizer:
    """The clients' linear terms ``g_k``: the correction ``-g_k``, updated from each client's
    update (the algorithm's own state; the server keeps none and needs no report)."""

    alpha: float
    reports: ClassVar[tuple[str, ...]] = ()

    def init(self, params: torch.Tensor) -> None:
        return None

    def shared(self, state: None) -> Mapping[str, torch.Tensor]:
        return {}

    def correction(
        self, shared: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        g = own.get(LINEAR_TERM)
        return None if g is None else -g

    def remember(
        self,
        shared: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor],
        result: ClientResult,
        *,
        settings: LocalTraining,
    ) -> tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]:
        g = own.get(LINEAR_TERM)
        step = result.update * self.alpha
        return {LINEAR_TERM: -step if g is None else g - step}, {}

    def start(self, state: None) -> None:
        return None

    def fold(self, acc: None, state: None, report: Mapping[str, torch.Tensor]) -> None:
        return None

    def finish(self, acc: None, state: None, *, num_clients: int) -> None:
        return None


@dataclass(frozen=True)
class ServerCorrection:
    """The aggregate stage: ``h -= alpha |P_t| / N * mean update``; step ``mean - h / alpha``."""

    alpha: float
    name = "feddyn_server"
    kind = "server"

    def init(self, params: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(params)

    def update(
        self,
        delta: torch.Tensor,
        h: torch.Tensor,
        *,
        cohort: Cohort,
        params: torch.Tensor,
        info: RoundInfo,
    ) -> tuple[torch.Tensor, Any]:
        if info.num_clients is None:
            raise ValueError("FedDyn's server step needs the population size N")
        h = h - self.alpha * (cohort.num_results / info.num_clients) * delta
        return delta - h / self.alpha, h


def feddyn(alpha: Annotated[float, Gt(0)] = 0.01, *, weighting: Weighting = "uniform") -> Algorithm:
    """FedDyn with regularization strength ``alpha`` (the paper tries 0.1, 0.01, 0.001).

    The paper averages the participants' models uniformly (the default here).

    >>> feddyn(0.1).program.proximal_mu
    0.1
    """
    if not alpha > 0:
        raise ValueError(f"FedDyn's alpha must be > 0, got {alpha}")
    return Algorithm(
        name="feddyn",
        program=ClientProgram(terms=(ProximalTerm(alpha),)),
        aggregation=pipeline(weighting=weighting, server=ServerCorrection(alpha)),
        state=DynamicRegularizer(alpha),
    )
