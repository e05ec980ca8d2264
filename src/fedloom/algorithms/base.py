"""An algorithm is a value: its client program, its aggregation pipeline and the state it
owns (SCAFFOLD's control variates).

:func:`server_init` and :func:`server_update` are the whole server side of the FedAvg family.
The aggregation is one :class:`~fedloom.aggregate.Pipeline` (``docs/pipeline.md``):

1. the weighting stage gives each result its weight ``p_k`` (examples, uniform, ...);
2. per-client stages rewrite each update (FedNova divides it by the client's local work,
   q-FFL rescales it and its weight by the loss, clipping bounds its norm);
3. the reducer combines them: the weighted mean by default, folded in as results arrive, or
   a robust rule (median, Krum, ...; see :mod:`fedloom.aggregate.robust`) over their stack;
4. aggregate stages turn ``Delta`` into the step (FedNova's ``tau_eff``, the server learning
   rate, server momentum, Adam, ...), which is added to ``w``;
5. algorithms with their own state (SCAFFOLD's control variates, :class:`StateLogic`)
   update it from the clients' reports; where the server keeps the clients' entries (the
   client-state store, in simulation) it runs the clients' half of the logic itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

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
from fedloom.algorithms.personal import (
    PERSONAL_VALUES,
    Personal,
    PersonalModel,
    personalized_params,
)
from fedloom.client import ClientProgram, LocalTraining
from fedloom.client.alternation import Alternation
from fedloom.client.ewc import FisherEstimate
from fedloom.client.store import ClientStates, with_writes
from fedloom.compress import Compression
from fedloom.types import ClientPlan, ClientResult

__all__ = [
    "Algorithm",
    "ServerState",
    "StateLogic",
    "pipeline_metrics",
    "pipeline_stop_reason",
    "prepare_plans",
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
        state: the algorithm's own server and per-client state, and what it sends each
            client (SCAFFOLD's control variates, in ``scaffold.py``); ``None`` for none.
        local_overrides: fields of :class:`LocalTraining` the algorithm fixes (FedSGD fixes
            one full-batch step).
        personal: the parameters each client keeps for itself (FedPer, FedBN; see
            :mod:`fedloom.algorithms.personal`); ``None`` when every parameter is shared.
        personal_model: a whole personal model per client, trained besides the global one
            (Ditto, :mod:`fedloom.algorithms.ditto`); ``None`` for none.
        client_extras: names of client-state store entries that each client's objective
            terms read from its context (EWC's ``ewc/fisher`` and ``ewc/anchor``,
            :mod:`fedloom.algorithms.lifelong`); :func:`prepare_plans` puts a client's own
            into its plan's ``extras``. They are the client's: nothing of them is sent back.
        fisher: how each client estimates its EWC Fisher when a task of the data's task
            sequence ends (:class:`~fedloom.client.ewc.FisherEstimate`; simulation writes it
            into the client-state store); ``None`` for none.
    """

    name: str
    program: ClientProgram = field(default_factory=ClientProgram)
    aggregation: Pipeline = field(default_factory=Pipeline)
    state: StateLogic | None = None
    local_overrides: Mapping[str, Any] = field(default_factory=dict)
    personal: Personal | None = None
    personal_model: PersonalModel | None = None
    client_extras: tuple[str, ...] = ()
    fisher: FisherEstimate | None = None

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
        aggregation's stages read, and FedRep's head-then-body schedule (which needs the
        personal parameters resolved: :func:`~fedloom.algorithms.personal.with_model`)."""
        wanted = set(self.program.statistics) | set(self.aggregation.statistics)
        program = replace(self.program, statistics=frozenset(wanted))
        if self.personal is not None and self.personal.alternates:  # FedRep: head, then body
            alternation = Alternation(
                self.personal.resolved(),
                head_epochs=self.personal.head_epochs or 0,
                head_steps=self.personal.head_steps or 0,
            )
            program = replace(program, alternation=alternation)
        return program

    def with_aggregation(self, **changes: Any) -> Algorithm:
        """The same algorithm with parts of its pipeline replaced: ``weighting``,
        ``per_client``, ``reduce`` or ``server`` (see :class:`~fedloom.aggregate.Pipeline`)."""
        return replace(self, aggregation=replace(self.aggregation, **changes))

    def with_compression(self, compression: Compression | None) -> Algorithm:
        """The same algorithm with its clients' updates (and broadcast) compressed
        (:class:`~fedloom.compress.Compression`; ``None``: float32)."""
        return replace(self, program=replace(self.program, compression=compression))

    def with_aggregator(self, reducer: Reducer) -> Algorithm:
        """The same algorithm with another reducer (e.g. a robust rule)."""
        return self.with_aggregation(reduce=reducer)


class StateLogic(Protocol):
    """An algorithm's own state: a server value and per-client entries (SCAFFOLD's ``c`` and
    ``c_k``; ``scaffold.py`` and ``feddyn.py`` are the examples).

    It has a server half and a client half, all pure functions of values:

    - server: :meth:`init`, :meth:`shared` (what every client of a round receives),
      :meth:`start`, :meth:`fold` (one client's report in), :meth:`finish`;
    - client: :meth:`correction` (the client's gradient correction, from what it was sent
      and its own entries) and :meth:`remember` (its new entries, and the report the server
      folds in).

    In simulation the server runs both halves, keeping the entries in the client-state store
    (:mod:`fedloom.client.store`). In deployment the client half runs on the client itself,
    with the entries in the client's own file, so per-client state never leaves the client;
    only the report does. The logic is a frozen dataclass of numbers registered with
    :func:`~fedloom.client.portable.portable`, so it travels to deployed clients as data.
    ``reports`` names the tensors :meth:`remember` reports; each has the model's size.
    """

    @property
    def reports(self) -> tuple[str, ...]:
        """The names of the tensors :meth:`remember` reports."""
        ...

    def init(self, params: torch.Tensor) -> Any:
        """The server's own state before round 0."""
        ...

    def shared(self, state: Any) -> Mapping[str, torch.Tensor]:
        """What every client of a round receives (SCAFFOLD: ``{"c": c}``)."""
        ...

    def correction(
        self, shared: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """The client's gradient correction (its linear term), or ``None`` for none."""
        ...

    def remember(
        self,
        shared: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor],
        result: ClientResult,
        *,
        settings: LocalTraining,
    ) -> tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]:
        """After training: ``(the client's new entries, its report to the server)``."""
        ...

    def start(self, state: Any) -> Any:
        """A fresh accumulator for one round."""
        ...

    def fold(self, acc: Any, state: Any, report: Mapping[str, torch.Tensor]) -> Any:
        """Fold one client's report into the accumulator."""
        ...

    def finish(self, acc: Any, state: Any, *, num_clients: int) -> Any:
        """The server's new state after the round."""
        ...


@dataclass(frozen=True)
class ServerState:
    """The global model and all server-side state after ``round`` rounds.

    ``aggregation`` is the pipeline's state (server optimizer moments, centered clipping's
    previous aggregate, ...); ``algorithm`` the algorithm's own (SCAFFOLD's ``c``);
    ``clients`` the client-state store (SCAFFOLD's ``c_k``). Every field is a value made of
    tensors, numbers, tuples and dicts, so a checkpoint stores it without knowing the
    algorithm.
    """

    params: torch.Tensor
    buffers: torch.Tensor
    aggregation: Any
    round: int = 0
    algorithm: Any = None
    clients: ClientStates = field(default_factory=dict)

    def skipped(self) -> ServerState:
        """The state after a round that changed nothing."""
        return replace(self, round=self.round + 1)


def server_init(
    algorithm: Algorithm,
    params: torch.Tensor,
    buffers: torch.Tensor,
    *,
    clients: ClientStates | None = None,
) -> ServerState:
    """The server state before round 0; ``clients`` is an empty client-state store to use
    (default: in memory; :class:`~fedloom.client.spill.SpilledClientStates` for disk)."""
    own = algorithm.state.init(params) if algorithm.state is not None else None
    aggregation = algorithm.aggregation.init(params)
    store = clients if clients is not None else {}  # an empty store is falsy: no `or`
    return ServerState(params.clone(), buffers.clone(), aggregation, 0, own, store)


def prepare_plans(
    algorithm: Algorithm, state: ServerState, plans: Sequence[ClientPlan]
) -> list[ClientPlan]:
    """The plans with each client's gradient correction (SCAFFOLD's ``c - c_k``), its own
    context extras (EWC's Fisher and anchor) and its start point (the global model with its
    personal values, FedPer and FedBN), computed on
    the server from the client-state store (simulation; deployed clients that keep their own
    state compute it themselves)."""
    logic = algorithm.state
    prepared = list(plans)
    if algorithm.client_extras:  # the client's own tensors its terms read (EWC's Fisher)
        for i, plan in enumerate(prepared):
            own = state.clients.get(plan.client_id, {})
            mine = {name: own[name] for name in algorithm.client_extras if name in own}
            if mine:
                prepared[i] = replace(plan, extras=mine)
    if algorithm.personal is not None:
        mask = algorithm.personal.resolved()
        for i, plan in enumerate(prepared):
            own = state.clients.get(plan.client_id, {})
            start = personalized_params(state.params, mask, own)
            if start is not None:
                prepared[i] = replace(plan, start=start)
    if logic is None:
        return prepared
    shared = logic.shared(state.algorithm)
    for i, plan in enumerate(prepared):
        correction = logic.correction(shared, state.clients.get(plan.client_id, {}))
        if correction is not None:
            prepared[i] = replace(plan, correction=correction)
    return prepared


def server_update(
    algorithm: Algorithm,
    state: ServerState,
    results: Iterable[ClientResult],
    *,
    settings: LocalTraining | None = None,
    num_clients: int | None = None,
    average_buffers: bool = True,
    seed: int = 0,
    cohort_size: int | None = None,
    sampling: str = "uniform",
    sampling_rate: float | None = None,
    noise_secret: int | None = None,
    personal_on_clients: bool = False,
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
        cohort_size: M, the clients sampled per round with uniform sampling (DP-FedAvg
            divides by it).
        sampling, sampling_rate: how the cohort was sampled: ``"uniform"`` (exactly
            ``cohort_size``) or ``"poisson"`` (each client with probability
            ``sampling_rate`` q; DP-FedAvg divides by ``q N`` and accounts for it).
        noise_secret: mixed into the streams of noise that must stay secret (DP noise,
            :meth:`RoundInfo.private_generator`); ``None`` keeps them reproducible.
        personal_on_clients: the clients keep their personal values themselves (deployment,
            :mod:`fedloom.algorithms.personal_client`): the server stores none; the personal
            coordinates of the updates are still left out of the aggregate.

    The old ``state`` is never modified; when a stage fails, no new state exists.
    """
    settings = settings or LocalTraining()
    logic = algorithm.state
    if logic is not None and num_clients is None:
        raise ValueError(f"{algorithm.name}'s server update needs num_clients (N)")
    run = begin(
        algorithm.aggregation,
        state.aggregation,
        state.params,
        info=RoundInfo(
            seed=seed,
            round=state.round,
            local_lr=settings.lr,
            num_clients=num_clients,
            cohort_size=cohort_size,
            sampling=sampling,
            sampling_rate=sampling_rate,
            secret=noise_secret,
        ),
        expected=len(results) if isinstance(results, Sized) else None,
        num_buffers=state.buffers.numel() if average_buffers else 0,
    )
    acc = logic.start(state.algorithm) if logic is not None else None
    shared = logic.shared(state.algorithm) if logic is not None else {}
    mask = algorithm.personal.resolved() if algorithm.personal is not None else None
    writes: dict[int, dict[str, torch.Tensor]] = {}
    for r in results:
        if mask is not None:  # keep the personal values, aggregate only the shared part
            if not personal_on_clients:
                values = (state.params + r.update)[mask]
                writes.setdefault(r.client_id, {})[PERSONAL_VALUES] = values
            r = replace(r, update=r.update.masked_fill(mask, 0.0))
        run = fold(run, r)
        if logic is None:
            continue
        report = r.state_report
        if report is None:  # the server keeps this client's entries: run its client half
            own = state.clients.get(r.client_id, {})
            entries, report = logic.remember(shared, own, r, settings=settings)
            writes.setdefault(r.client_id, {}).update(entries)
        acc = logic.fold(acc, state.algorithm, report)
    outcome = finish(run)
    step = outcome.step if mask is None else outcome.step.masked_fill(mask, 0.0)
    own = state.algorithm
    if logic is not None and num_clients is not None:
        own = logic.finish(acc, state.algorithm, num_clients=num_clients)
    return ServerState(
        state.params + step,
        outcome.buffers if outcome.buffers is not None else state.buffers,
        outcome.state,
        state.round + 1,
        own,
        with_writes(state.clients, writes) if writes else state.clients,
    )


def pipeline_metrics(algorithm: Algorithm, state: ServerState) -> dict[str, float]:
    """Numbers the pipeline's stages report about their state after a round (a stage with a
    ``metrics(state) -> dict`` method: DP-FedAvg's noise stage reports ``dp_epsilon``)."""
    p, sub = algorithm.aggregation, state.aggregation
    pairs = [
        (p.weighting, sub["weighting"]),
        *zip(p.per_client, sub["per_client"], strict=True),
        (p.reduce, sub["reduce"]),
        *zip(p.server, sub["server"], strict=True),
    ]
    found: dict[str, float] = {}
    for stage, stage_state in pairs:
        report = getattr(stage, "metrics", None)
        if report is not None:
            found.update(report(stage_state))
    return found


def pipeline_stop_reason(algorithm: Algorithm, state: ServerState, info: RoundInfo) -> str | None:
    """Why the round ``info`` describes must not run, if a stage says so (a stage with a
    ``stop_reason(state, info)`` method: DP-FedAvg's privacy budget); else ``None``."""
    p, sub = algorithm.aggregation, state.aggregation
    for stage, stage_state in zip(p.server, sub["server"], strict=True):
        ask = getattr(stage, "stop_reason", None)
        reason = ask(stage_state, info) if ask is not None else None
        if reason is not None:
            return str(reason)
    return None
