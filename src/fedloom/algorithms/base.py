"""An algorithm is a value: its client program, its aggregation pipeline and whether it keeps
SCAFFOLD's control variates.

:func:`server_init` and :func:`server_update` are the whole server side of the FedAvg family.
The aggregation is one :class:`~fedloom.aggregate.Pipeline` (``docs/pipeline.md``):

1. the weighting stage gives each result its weight ``p_k`` (examples, uniform, ...);
2. per-client stages rewrite each update (FedNova divides it by the client's local work,
   q-FFL rescales it and its weight by the loss, clipping bounds its norm);
3. the reducer combines them: the weighted mean by default, folded in as results arrive, or
   a robust rule (median, Krum, ...; see :mod:`fedloom.aggregate.robust`) over their stack;
4. aggregate stages turn ``Delta`` into the step (FedNova's ``tau_eff``, the server learning
   rate, server momentum, Adam, ...), which is added to ``w``;
5. algorithms with control variates (SCAFFOLD) update them from the same results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fedloom.aggregate import (
    ClientStage,
    Pipeline,
    Reducer,
    RoundInfo,
    begin,
    finish,
    fold,
)
from fedloom.client import ClientProgram, LocalTraining
from fedloom.types import ClientPlan, ClientResult

__all__ = [
    "Algorithm",
    "ServerState",
    "attach_corrections",
    "server_init",
    "server_update",
]


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes one FedAvg-family algorithm from another.

    Attributes:
        name: shown in logs and run names.
        program: what every client does beyond local SGD (objective terms, statistics).
        aggregation: how the results become the server's step (weighting, per-client stages,
            reducer, aggregate stages; see :mod:`fedloom.aggregate.pipeline`).
        control_variates: keep SCAFFOLD's server and client control variates.
        local_overrides: fields of :class:`LocalTraining` the algorithm fixes (FedSGD fixes
            one full-batch step).
    """

    name: str
    program: ClientProgram = field(default_factory=ClientProgram)
    aggregation: Pipeline = field(default_factory=Pipeline)
    control_variates: bool = False
    local_overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def weighting(self) -> ClientStage:
        """The weighting stage of the aggregation."""
        return self.aggregation.weighting

    def min_updates(self) -> int:
        """The fewest results a round needs (Krum needs ``2f + 3``)."""
        return self.aggregation.min_updates()

    def local_training(self, settings: LocalTraining) -> LocalTraining:
        """The local settings after this algorithm's overrides."""
        return replace(settings, **self.local_overrides) if self.local_overrides else settings

    def client_program(self) -> ClientProgram:
        """The program the clients run: the algorithm's own, plus the statistics that the
        aggregation's stages read."""
        wanted = set(self.program.statistics) | set(self.aggregation.statistics)
        return replace(self.program, statistics=frozenset(wanted))

    def with_aggregation(self, **changes: Any) -> Algorithm:
        """The same algorithm with parts of its pipeline replaced: ``weighting``,
        ``per_client``, ``reduce`` or ``server`` (see :class:`~fedloom.aggregate.Pipeline`)."""
        return replace(self, aggregation=replace(self.aggregation, **changes))

    def with_aggregator(self, reducer: Reducer) -> Algorithm:
        """The same algorithm with another reducer (e.g. a robust rule)."""
        return self.with_aggregation(reduce=reducer)


@dataclass(frozen=True)
class ServerState:
    """The global model and the algorithm's server-side state after ``round`` rounds.

    ``aggregation`` is the pipeline's state (server optimizer moments, centered clipping's
    previous aggregate, ...). ``control`` and ``client_controls`` are SCAFFOLD's ``c`` and
    ``c_k`` (clients that never took part have ``c_k = 0`` and are absent).
    """

    params: torch.Tensor
    buffers: torch.Tensor
    aggregation: Any
    round: int = 0
    control: torch.Tensor | None = None
    client_controls: Mapping[int, torch.Tensor] = field(default_factory=dict)

    def skipped(self) -> ServerState:
        """The state after a round that changed nothing."""
        return replace(self, round=self.round + 1)


def server_init(algorithm: Algorithm, params: torch.Tensor, buffers: torch.Tensor) -> ServerState:
    """The server state before round 0."""
    control = torch.zeros_like(params) if algorithm.control_variates else None
    return ServerState(
        params.clone(), buffers.clone(), algorithm.aggregation.init(params), 0, control
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
    results: Iterable[ClientResult],
    *,
    settings: LocalTraining | None = None,
    num_clients: int | None = None,
    average_buffers: bool = True,
    seed: int = 0,
) -> ServerState:
    """``w_{t+1} = w_t + pipeline(results)``; the results are folded in one at a time.

    Args:
        results: the round's valid results (a list, or any iterable: nothing is stacked
            unless the reducer needs it).
        settings: the local settings the clients used (q-FFL reads the learning rate,
            SCAFFOLD too).
        num_clients: N, the population, for SCAFFOLD's ``c += (1/N) sum_k Delta c_k``.
        average_buffers: average float buffers with the weighting's weights; otherwise the
            global buffers stay as they are (clients keep their own).
        seed: the run seed, from which the stages' random streams are derived.

    The old ``state`` is never modified; when a stage fails, no new state exists.
    """
    settings = settings or LocalTraining()
    control = state.control if algorithm.control_variates else None
    if control is not None and num_clients is None:
        raise ValueError("SCAFFOLD's server update needs num_clients (N)")
    run = begin(
        algorithm.aggregation,
        state.aggregation,
        state.params,
        info=RoundInfo(seed=seed, round=state.round, local_lr=settings.lr),
        expected=len(results) if isinstance(results, Sized) else None,
        num_buffers=state.buffers.numel() if average_buffers else 0,
    )
    client_controls = dict(state.client_controls)
    control_change = torch.zeros_like(control) if control is not None else None
    for r in results:
        run = fold(run, r)
        if control is not None and control_change is not None:
            old = client_controls.get(r.client_id, torch.zeros_like(control))
            new = scaffold_client_control(
                old, control, r.update, num_steps=r.num_steps, lr=settings.lr
            )
            control_change += new - old
            client_controls[r.client_id] = new
    outcome = finish(run)
    if control is not None and control_change is not None and num_clients is not None:
        control = control + control_change / num_clients
    return ServerState(
        state.params + outcome.step,
        outcome.buffers if outcome.buffers is not None else state.buffers,
        outcome.state,
        state.round + 1,
        control if control is not None else state.control,
        client_controls,
    )
