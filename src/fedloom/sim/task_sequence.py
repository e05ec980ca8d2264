"""Simulating clients whose data arrives as a sequence of tasks (lifelong learning).

:class:`TaskSequenceExecutor` holds one executor of the chosen engine per task, each built on
the task's view of the data (:func:`fedloom.data.task_sequence.task_data`: every client's
rows of the task's labels), and sends each round's cohort to the executor of the round's
task. :func:`fisher_at_task_ends` is the clients' work when a task ends: each estimates its
EWC Fisher of the task on its own rows at the model the task ended with
(:class:`fedloom.client.ewc.FisherEstimate`); the writes go into the client-state store, the
server never reads them (they reach only the client's own objective, through its plan).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fedloom.algorithms import ServerState
from fedloom.client import LocalContext
from fedloom.client.ewc import FisherEstimate
from fedloom.client.objectives import Objective
from fedloom.data import FederatedDataset
from fedloom.data.task_sequence import TaskSequence
from fedloom.engine import Executor
from fedloom.engine.loop import AfterRound
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["TaskSequenceExecutor", "fisher_at_task_ends", "task_ends"]


def task_ends(sequence: TaskSequence, round: int) -> bool:
    """Whether (0-based) ``round`` is the last round of its task: the next round belongs to
    another task, or the sequence's last round (with ``rounds_per_task``)."""
    last = sequence.num_rounds
    return sequence.task_at(round + 1) != sequence.task_at(round) or (
        last is not None and round + 1 == last
    )


class TaskSequenceExecutor:
    """One executor per task; round ``t``'s plans go to that of ``sequence.task_at(t)``."""

    def __init__(self, executors: Sequence[Executor], sequence: TaskSequence):
        if len(executors) != sequence.num_tasks:
            raise ValueError(f"one executor per task: {sequence.num_tasks}, got {len(executors)}")
        self.executors = tuple(executors)
        self.sequence = sequence

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        tasks = {self.sequence.task_at(p.round) for p in plans}
        if len(tasks) > 1:
            raise ValueError(f"one round's plans span tasks {sorted(tasks)}")
        if not plans:
            return []
        return self.executors[tasks.pop()].fit(plans, params, buffers, context)

    def close(self) -> None:
        for executor in self.executors:
            close = getattr(executor, "close", None)
            if close is not None:
                close()


def fisher_at_task_ends(
    sequence: TaskSequence,
    views: Sequence[FederatedDataset],
    objective: Objective,
    estimate: FisherEstimate,
) -> AfterRound:
    """The round loop's ``after_round``: after the last round of each task, every client's
    new EWC entries (its Fisher of the task on its rows in ``views[task]`` at the global
    model, with ``objective``'s task loss alone, added to its own; the anchor moved there)."""

    def after(state: ServerState, round: int) -> dict[int, dict[str, torch.Tensor]]:
        if not task_ends(sequence, round):
            return {}
        view = views[sequence.task_at(round)]
        return {
            k: estimate.writes(
                objective,
                state.clients.get(k, {}),
                state.params,
                state.buffers,
                view.client_batch(k),
            )
            for k in range(view.num_clients)
        }

    return after
