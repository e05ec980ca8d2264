"""An algorithm is a value: its local objective terms, its weighting and its server transform.

:func:`server_init` and :func:`server_update` are the whole server side of the FedAvg family:
weight the participants, average their updates, transform the average, add it to the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fedloom.aggregate import Transform, Weighting, client_weights, identity, weighted_mean
from fedloom.client import LocalTraining, ObjectiveTerm
from fedloom.types import ClientResult

__all__ = ["Algorithm", "ServerState", "server_init", "server_update"]


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes one FedAvg-family algorithm from another.

    Attributes:
        name: shown in logs and run names.
        objective_terms: added to each client's data loss.
        weighting: how updates are weighted (see :mod:`fedloom.aggregate.weighting`).
        server: the transform applied to the averaged update.
        local_overrides: fields of :class:`LocalTraining` the algorithm fixes (FedSGD fixes
            one full-batch step).
    """

    name: str
    objective_terms: tuple[ObjectiveTerm, ...] = ()
    weighting: Weighting = "examples"
    server: Transform = field(default_factory=identity)
    local_overrides: Mapping[str, Any] = field(default_factory=dict)

    def local_training(self, settings: LocalTraining) -> LocalTraining:
        """The local settings after this algorithm's overrides."""
        return replace(settings, **self.local_overrides) if self.local_overrides else settings


@dataclass(frozen=True)
class ServerState:
    """The global model and the server transform's state after ``round`` rounds."""

    params: torch.Tensor
    buffers: torch.Tensor
    transform_state: Any
    round: int = 0


def server_init(algorithm: Algorithm, params: torch.Tensor, buffers: torch.Tensor) -> ServerState:
    """The server state before round 0."""
    return ServerState(params.clone(), buffers.clone(), algorithm.server.init(params), 0)


def server_update(
    algorithm: Algorithm,
    state: ServerState,
    results: Sequence[ClientResult],
    *,
    average_buffers: bool = True,
) -> ServerState:
    """``w_{t+1} = w_t + server(sum_k p_k (w_k' - w_t))``, ``p_k`` from the weighting.

    Float buffers are averaged with the same weights when ``average_buffers``; otherwise the
    global buffers stay as they are (clients keep their own).
    """
    weights = client_weights(results, algorithm.weighting)
    delta = weighted_mean(torch.stack([r.update for r in results]), weights)
    step, transform_state = algorithm.server.update(delta, state.transform_state)
    buffers = state.buffers
    if average_buffers and buffers.numel():
        buffers = weighted_mean(torch.stack([r.buffers for r in results]), weights)
    return ServerState(state.params + step, buffers, transform_state, state.round + 1)
