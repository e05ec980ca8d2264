"""An algorithm is a value: its client program, weighting, update normalization and server
transform.

:func:`server_init` and :func:`server_update` are the whole server side of the FedAvg family:

1. weight the participants (``p_k``, summing to 1);
2. optionally *normalize* the updates (FedNova divides each by its local work, q-FFL
   reweights by loss), which may change the weights and scale the result;
3. aggregate: ``Delta = factor * aggregator(u, p)``, the weighted mean by default, or a
   robust rule (median, Krum, ...; see :mod:`fedloom.aggregate.robust`);
4. transform ``Delta`` (server learning rate, server momentum, Adam, ...) and add it to ``w``;
5. algorithms with control variates (SCAFFOLD) update them from the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fedloom.aggregate import (
    Aggregator,
    Mean,
    Transform,
    Weighting,
    client_weights,
    identity,
    weighted_mean,
)
from fedloom.client import ClientProgram, LocalTraining
from fedloom.types import ClientPlan, ClientResult

__all__ = [
    "Algorithm",
    "Normalization",
    "ServerState",
    "attach_corrections",
    "server_init",
    "server_update",
]

Normalization = Callable[
    [Sequence[ClientResult], torch.Tensor, torch.Tensor, LocalTraining],
    tuple[torch.Tensor, torch.Tensor, float],
]
"""``(results, updates [K, P], weights [K], settings) -> (updates, weights, factor)``."""


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes one FedAvg-family algorithm from another.

    Attributes:
        name: shown in logs and run names.
        program: what every client does beyond local SGD (objective terms, statistics).
        weighting: how updates are weighted (see :mod:`fedloom.aggregate.weighting`).
        normalization: rewrites updates and weights before averaging (FedNova, q-FFL).
        normalization_statistics: client statistics the normalization reads.
        aggregator: combines the updates (weighted mean, or a robust rule).
        server: the transform applied to the averaged update.
        control_variates: keep SCAFFOLD's server and client control variates.
        local_overrides: fields of :class:`LocalTraining` the algorithm fixes (FedSGD fixes
            one full-batch step).
    """

    name: str
    program: ClientProgram = field(default_factory=ClientProgram)
    weighting: Weighting = "examples"
    normalization: Normalization | None = None
    normalization_statistics: frozenset[str] = field(default_factory=frozenset)
    aggregator: Aggregator = field(default_factory=Mean)
    server: Transform = field(default_factory=identity)
    control_variates: bool = False
    local_overrides: Mapping[str, Any] = field(default_factory=dict)

    def local_training(self, settings: LocalTraining) -> LocalTraining:
        """The local settings after this algorithm's overrides."""
        return replace(settings, **self.local_overrides) if self.local_overrides else settings

    def client_program(self) -> ClientProgram:
        """The program the clients run: the algorithm's own, plus the statistics that the
        weighting and normalization read."""
        wanted = set(self.program.statistics) | set(self.normalization_statistics)
        if self.weighting == "inverse_variance":
            wanted.add("update_variance")
        return replace(self.program, statistics=frozenset(wanted))

    def with_aggregator(self, aggregator: Aggregator) -> Algorithm:
        """The same algorithm with another aggregation rule (e.g. a robust one)."""
        return replace(self, aggregator=aggregator)


@dataclass(frozen=True)
class ServerState:
    """The global model and the algorithm's server-side state after ``round`` rounds.

    ``control`` and ``client_controls`` are SCAFFOLD's ``c`` and ``c_k`` (clients that never
    took part have ``c_k = 0`` and are absent).
    """

    params: torch.Tensor
    buffers: torch.Tensor
    transform_state: Any
    round: int = 0
    control: torch.Tensor | None = None
    client_controls: Mapping[int, torch.Tensor] = field(default_factory=dict)
    aggregator_state: Any = None

    def skipped(self) -> ServerState:
        """The state after a round that changed nothing."""
        return replace(self, round=self.round + 1)


def server_init(algorithm: Algorithm, params: torch.Tensor, buffers: torch.Tensor) -> ServerState:
    """The server state before round 0."""
    control = torch.zeros_like(params) if algorithm.control_variates else None
    return ServerState(
        params.clone(),
        buffers.clone(),
        algorithm.server.init(params),
        0,
        control,
        aggregator_state=algorithm.aggregator.init(params.numel()),
    )


def attach_corrections(
    algorithm: Algorithm, state: ServerState, plans: Sequence[ClientPlan]
) -> list[ClientPlan]:
    """The plans with SCAFFOLD's gradient correction ``c - c_k`` for each client."""
    if not algorithm.control_variates or state.control is None:
        return list(plans)
    control = state.control
    return [
        replace(plan, correction=control - state.client_controls.get(plan.client_id, 0.0))
        for plan in plans
    ]


def scaffold_client_control(
    client_control: torch.Tensor | float,
    control: torch.Tensor,
    update: torch.Tensor,
    *,
    num_steps: int,
    lr: float,
) -> torch.Tensor:
    """SCAFFOLD option II (Karimireddy et al. 2020, Eq. 4):
    ``c_k+ = c_k - c + (x - y_k) / (K lr)`` with ``y_k - x`` the client's update.

    With plain SGD this is the mean local gradient along the client's trajectory.
    """
    return client_control - control - update / (num_steps * lr)


def server_update(
    algorithm: Algorithm,
    state: ServerState,
    results: Sequence[ClientResult],
    *,
    settings: LocalTraining | None = None,
    num_clients: int | None = None,
    average_buffers: bool = True,
) -> ServerState:
    """``w_{t+1} = w_t + server(factor * aggregator(u, p))`` after the algorithm's
    normalization.

    Args:
        settings: the local settings the clients used (q-FFL reads the learning rate,
            SCAFFOLD too).
        num_clients: N, the population, for SCAFFOLD's ``c += (1/N) sum_k Delta c_k``.
        average_buffers: average float buffers with the same weights; otherwise the global
            buffers stay as they are (clients keep their own).
    """
    settings = settings or LocalTraining()
    base_weights = client_weights(results, algorithm.weighting)
    weights = base_weights
    updates = torch.stack([r.update for r in results])
    factor = 1.0
    if algorithm.normalization is not None:
        updates, weights, factor = algorithm.normalization(results, updates, weights, settings)
    delta, aggregator_state = algorithm.aggregator.aggregate(
        updates, weights, state.aggregator_state, [r.client_id for r in results]
    )
    if factor != 1.0:
        delta = delta * factor
    step, transform_state = algorithm.server.update(delta, state.transform_state)
    buffers = state.buffers
    if average_buffers and buffers.numel():
        buffers = weighted_mean(torch.stack([r.buffers for r in results]), base_weights)
    control, client_controls = state.control, state.client_controls
    if algorithm.control_variates and control is not None:
        if num_clients is None:
            raise ValueError("SCAFFOLD's server update needs num_clients (N)")
        client_controls = dict(client_controls)
        control_change = torch.zeros_like(control)
        for r in results:
            old = client_controls.get(r.client_id, torch.zeros_like(control))
            new = scaffold_client_control(
                old, control, r.update, num_steps=r.num_steps, lr=settings.lr
            )
            control_change += new - old
            client_controls[r.client_id] = new
        control = control + control_change / num_clients
    return ServerState(
        state.params + step,
        buffers,
        transform_state,
        state.round + 1,
        control,
        client_controls,
        aggregator_state,
    )
