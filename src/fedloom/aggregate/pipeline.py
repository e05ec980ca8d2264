"""The aggregation pipeline of a round: weighting -> per-client stages -> reducer -> aggregate
stages, with results folded in one at a time.

::

    result_k --> weighting --> per-client stages --> reducer.fold --.   (k = 1..K, any order)
       |            |          (clip, normalize,     (running sum,  |
       |            |           quantize, noise)      or one row    |
       |            v                                 of a stack)   |
       |      buffers mean                                          v
       |                           Cohort(K, sum w, tallies) <-- reducer.finish
       |                                        |                   |
       |                                        v                   v Delta
       |                                   end_round of  aggregate stages (noise, rescale,
       |                                   client stages  server lr, momentum, Adam)
       v                                                            v
    (SCAFFOLD's c_k in the algorithm)                       w_{t+1} = w_t + step

:func:`begin` starts a round from the pipeline's state, :func:`fold` takes one client result,
:func:`finish` returns the step, the averaged buffers and the pipeline's new state. Nothing is
stored beyond the reducer's accumulator: a streaming reducer keeps O(P) memory for any cohort.
Each stage's output is checked as it comes out (:mod:`fedloom.aggregate.stage`), and the new
state exists only once ``finish`` returns, so a faulty plugin leaves the server state as it
was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fedloom.aggregate.mean import Mean
from fedloom.aggregate.stage import (
    ClientStage,
    Cohort,
    Contribution,
    Reducer,
    RoundInfo,
    ServerStage,
    check_contribution,
    check_vector,
)
from fedloom.aggregate.weighting import ByExamples, Weighting, contribution_of, weighting_stage
from fedloom.types import ClientResult

__all__ = [
    "Outcome",
    "Pipeline",
    "RoundAggregation",
    "aggregate_stack",
    "begin",
    "finish",
    "fold",
    "fold_contribution",
    "pipeline",
]


@dataclass(frozen=True)
class Pipeline:
    """The whole aggregation: a weighting stage, per-client stages, one reducer, aggregate
    stages. Its state (:meth:`init`) is a dict of their states, kept in the server state."""

    weighting: ClientStage = field(default_factory=ByExamples)
    per_client: tuple[ClientStage, ...] = ()
    reduce: Reducer = field(default_factory=Mean)
    server: tuple[ServerStage, ...] = ()

    @property
    def statistics(self) -> frozenset[str]:
        """The client statistics the stages read."""
        stages = (self.weighting, *self.per_client)
        return frozenset().union(*(s.statistics for s in stages))

    def min_updates(self) -> int:
        return self.reduce.min_updates()

    @property
    def every_round(self) -> bool:
        """Whether the aggregation runs every round, whatever arrived, none included: an
        aggregate stage asks for it (``every_round = True``: DP-FedAvg's noise, as skipping
        a round for too few updates would depend on who took part, which its accountant does
        not cover) and the reducer is defined for no update (``min_updates() == 0``: a sum)."""
        wanted = any(getattr(stage, "every_round", False) for stage in self.server)
        return wanted and self.reduce.min_updates() == 0

    def init(self, params: torch.Tensor) -> dict[str, Any]:
        return {
            "weighting": self.weighting.init(params),
            "per_client": tuple(s.init(params) for s in self.per_client),
            "reduce": self.reduce.init(params),
            "server": tuple(s.init(params) for s in self.server),
        }


def pipeline(
    *,
    weighting: Weighting = "examples",
    per_client: ClientStage | Sequence[ClientStage] = (),
    reduce: Reducer | None = None,
    server: ServerStage | Sequence[ServerStage] = (),
) -> Pipeline:
    """A pipeline from its parts (a weighting name, single stages or sequences of them).

    >>> from fedloom.aggregate import CoordinateMedian, adam, clip
    >>> p = pipeline(per_client=clip(10.0), reduce=CoordinateMedian(), server=adam(0.01))
    >>> [p.weighting.name, p.per_client[0].name, p.reduce.name, p.server[0].name]
    ['examples', 'clip', 'CoordinateMedian', 'adam']
    """
    clients = tuple(per_client) if isinstance(per_client, Sequence) else (per_client,)
    servers = tuple(server) if isinstance(server, Sequence) else (server,)
    return Pipeline(weighting_stage(weighting), clients, reduce or Mean(), servers)


RunningBuffers = tuple[torch.Tensor, float]


@dataclass(frozen=True)
class RoundAggregation:
    """One round's aggregation in progress (see :func:`begin`)."""

    pipeline: Pipeline
    state: Mapping[str, Any]
    params: torch.Tensor
    info: RoundInfo
    acc: Any
    buffers: RunningBuffers | None = None
    num_results: int = 0
    total_weight: float = 0.0
    tallies: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """A finished round: the step for the params, the averaged buffers (``None`` when not
    averaged), the pipeline's new state and the cohort summary."""

    step: torch.Tensor
    buffers: torch.Tensor | None
    state: dict[str, Any]
    cohort: Cohort


def begin(
    pipeline: Pipeline,
    state: Mapping[str, Any],
    params: torch.Tensor,
    *,
    info: RoundInfo,
    expected: int | None = None,
    num_buffers: int = 0,
) -> RoundAggregation:
    """Start a round. ``expected``: the number of results when known (a stacked reducer
    allocates its matrix once); ``num_buffers``: average ``[Q]`` buffers too when > 0."""
    buffers = (torch.zeros(num_buffers, dtype=torch.float64), 0.0) if num_buffers else None
    acc = pipeline.reduce.start(params, expected=expected)
    return RoundAggregation(pipeline, state, params, info, acc, buffers)


def fold(run: RoundAggregation, result: ClientResult) -> RoundAggregation:
    """Take one client result: weight it, average its buffers, pass it through the
    per-client stages and fold it into the reducer."""
    stage = run.pipeline.weighting
    contribution = stage.update(contribution_of(result), run.state["weighting"], info=run.info)
    contribution = check_contribution(stage.name, contribution, run.params.numel())
    buffers = run.buffers
    if buffers is not None:
        total, weight = buffers
        total.add_(result.buffers.double(), alpha=contribution.weight)  # our running sum
        buffers = (total, weight + contribution.weight)
    return fold_contribution(replace(run, buffers=buffers), contribution)


def fold_contribution(run: RoundAggregation, contribution: Contribution) -> RoundAggregation:
    """Take one weighted contribution through the per-client stages into the reducer."""
    num_params = run.params.numel()
    check_contribution("input", contribution, num_params)
    for stage, sub in zip(run.pipeline.per_client, run.state["per_client"], strict=True):
        out = stage.update(contribution, sub, info=run.info)
        contribution = check_contribution(stage.name, out, num_params)
    tallies = dict(run.tallies)
    for key, value in contribution.tallies.items():
        tallies[key] = tallies.get(key, 0.0) + value
    return replace(
        run,
        acc=run.pipeline.reduce.fold(run.acc, contribution),
        num_results=run.num_results + 1,
        total_weight=run.total_weight + contribution.weight,
        tallies=tallies,
    )


def finish(run: RoundAggregation) -> Outcome:
    """Reduce, apply the aggregate stages and let every stage update its state."""
    p, info, state, num_params = run.pipeline, run.info, run.state, run.params.numel()
    if run.num_results == 0 and p.reduce.min_updates() > 0:  # a Sum is defined for none
        raise ValueError("no client result reached the aggregation this round")
    cohort = Cohort(run.num_results, run.total_weight, dict(run.tallies))
    delta, reduce_state = p.reduce.finish(run.acc, state["reduce"], info=info)
    check_vector(p.reduce.name, delta, num_params, what="the aggregate")
    server_states = []
    for stage, sub in zip(p.server, state["server"], strict=True):
        delta, sub = stage.update(delta, sub, cohort=cohort, params=run.params, info=info)
        check_vector(stage.name, delta, num_params)
        server_states.append(sub)
    new_state = {
        "weighting": p.weighting.end_round(state["weighting"], cohort, info=info),
        "per_client": tuple(
            s.end_round(sub, cohort, info=info)
            for s, sub in zip(p.per_client, state["per_client"], strict=True)
        ),
        "reduce": reduce_state,
        "server": tuple(server_states),
    }
    buffers = None
    if run.buffers is not None and run.buffers[1] > 0:  # a round without results keeps them
        total, weight = run.buffers
        buffers = (total / weight).to(torch.float32)
    return Outcome(delta, buffers, new_state, cohort)


def aggregate_stack(
    pipeline: Pipeline,
    updates: torch.Tensor,
    weights: torch.Tensor,
    *,
    state: Mapping[str, Any] | None = None,
    client_ids: Sequence[int] | None = None,
    info: RoundInfo | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Run the pipeline once over a ``[K, P]`` matrix with the given weights (the weighting
    stage is skipped): ``(Delta after the aggregate stages, new state)``. For tests,
    benchmarks and studies; the round loop folds client results instead."""
    params = updates.new_zeros(updates.shape[1])
    state = pipeline.init(params) if state is None else state
    ids = list(range(updates.shape[0])) if client_ids is None else list(client_ids)
    run = begin(pipeline, state, params, info=info or RoundInfo(), expected=updates.shape[0])
    for k in range(updates.shape[0]):
        contribution = Contribution(updates[k], float(weights[k]), ids[k], 1, 1)
        run = fold_contribution(run, contribution)
    outcome = finish(run)
    return outcome.step, outcome.state
