"""Task sequences: each client's data arrives as a sequence of tasks (lifelong learning).

A :class:`TaskSequence` names the labels of each task (split MNIST's digit pairs 0/1, 2/3,
4/5, 6/7, 8/9: :func:`label_groups`) and when the federation moves on to the next one (every
``rounds_per_task`` rounds, or from the rounds listed in ``starts``). Applied to any
:class:`~fedloom.data.FederatedDataset` (any label partition), :func:`task_data` gives the
federated view of one task: each client's training and held-out rows restricted to the
task's labels, so the clients see only the current task while the rows of the earlier ones
stay where they were (the partition is computed once). :func:`check_task_sequence` fails
early, naming the task, when a task of the sequence leaves a client without data.

Used by the ``lifelong`` study (:mod:`fedloom.studies.lifelong`), with EWC
(:mod:`fedloom.client.ewc`) against forgetting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedloom.data.federated import FederatedDataset
from fedloom.errors import ConfigError

__all__ = ["TaskSequence", "check_task_sequence", "label_groups", "task_data", "task_test_batch"]


def label_groups(num_classes: int, per_task: int = 2) -> tuple[tuple[int, ...], ...]:
    """Consecutive labels, ``per_task`` at a time: ``((0, 1), (2, 3), ...)`` for split MNIST.

    >>> label_groups(6)
    ((0, 1), (2, 3), (4, 5))
    """
    if per_task < 1 or num_classes % per_task:
        raise ValueError(f"per_task must be >= 1 and divide {num_classes}, got {per_task}")
    return tuple(tuple(range(s, s + per_task)) for s in range(0, num_classes, per_task))


@dataclass(frozen=True)
class TaskSequence:
    """Which labels each task holds and when each task begins.

    Attributes:
        tasks: the labels of each task, in order (``label_groups(10)`` for digit pairs).
        rounds_per_task: every task lasts this many rounds; or
        starts: the (0-based) round each task begins at: ``starts[0] == 0``, increasing
            (exactly one of ``rounds_per_task`` and ``starts``).
        field: the config field named in errors.

    >>> seq = TaskSequence(((0, 1), (2, 3)), rounds_per_task=3)
    >>> [seq.task_at(r) for r in range(6)], seq.num_rounds
    ([0, 0, 0, 1, 1, 1], 6)
    """

    tasks: tuple[tuple[int, ...], ...]
    rounds_per_task: int | None = None
    starts: tuple[int, ...] | None = None
    field: str = "data.task_sequence"

    def __post_init__(self) -> None:
        f = self.field
        if not self.tasks or any(len(t) == 0 for t in self.tasks):
            raise ConfigError(f"{f}.tasks: give at least one task, each with at least one label")
        if (self.rounds_per_task is None) == (self.starts is None):
            raise ConfigError(f"{f}: give exactly one of rounds_per_task and starts")
        if self.rounds_per_task is not None and self.rounds_per_task < 1:
            raise ConfigError(f"{f}.rounds_per_task: must be >= 1, got {self.rounds_per_task}")
        if self.starts is not None:
            s = list(self.starts)
            if (
                len(s) != len(self.tasks)
                or s[0] != 0
                or any(b <= a for a, b in zip(s, s[1:], strict=False))
            ):
                raise ConfigError(
                    f"{f}.starts: one increasing round per task, the first 0 "
                    f"({len(self.tasks)} tasks), got {s}"
                )

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_rounds(self) -> int | None:
        """Rounds to go through every task once (``None`` with ``starts``: the last task
        lasts as long as the run)."""
        return None if self.rounds_per_task is None else self.rounds_per_task * self.num_tasks

    def task_at(self, round: int) -> int:
        """The index of the task of (0-based) ``round``; the last task goes on after the
        sequence ends."""
        if self.rounds_per_task is not None:
            return min(round // self.rounds_per_task, self.num_tasks - 1)
        assert self.starts is not None
        return int(np.searchsorted(np.asarray(self.starts), round, side="right")) - 1


def _rows_of(labels: np.ndarray, index: np.ndarray, wanted: Sequence[int]) -> np.ndarray:
    return index[np.isin(labels[index], np.asarray(wanted))]


def task_data(data: FederatedDataset, sequence: TaskSequence, task: int) -> FederatedDataset:
    """The federated view of task ``task``: every client's training and held-out rows whose
    label is one of the task's. Raises :class:`~fedloom.errors.ConfigError` naming the task
    when a client has no training rows of it (see :func:`check_task_sequence`)."""
    check_task_sequence(data, sequence, tasks=(task,))
    labels = data.dataset.train_y.numpy()
    wanted = sequence.tasks[task]
    return FederatedDataset(
        data.dataset,
        tuple(_rows_of(labels, ix, wanted) for ix in data.client_train),
        tuple(_rows_of(labels, ix, wanted) for ix in data.client_holdout),
    )


def check_task_sequence(
    data: FederatedDataset, sequence: TaskSequence, *, tasks: Sequence[int] | None = None
) -> None:
    """Raise :class:`~fedloom.errors.ConfigError` when a task of ``sequence`` (all, or those
    in ``tasks``) has no training data on some client: one line per such task, naming it
    (``data.task_sequence.tasks[2]``), its labels and the clients."""
    labels = data.dataset.train_y.numpy()
    problems = []
    for i in range(sequence.num_tasks) if tasks is None else tasks:
        if not 0 <= i < sequence.num_tasks:
            raise ValueError(f"task {i} is not in the sequence of {sequence.num_tasks} tasks")
        wanted = sequence.tasks[i]
        empty = [
            k for k, ix in enumerate(data.client_train) if not np.isin(labels[ix], wanted).any()
        ]
        if empty:
            shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
            problems.append(
                f"{sequence.field}.tasks[{i}]: the task's labels {list(wanted)} have no training "
                f"example on client(s) {shown} ({len(empty)} of {data.num_clients}); every "
                "client must hold data of every task: use a partition that gives each client "
                "every label (IID, Dirichlet with a larger alpha) or drop the task"
            )
    if problems:
        raise ConfigError(problems)


def task_test_batch(data: FederatedDataset, labels: Sequence[int]) -> dict[str, torch.Tensor]:
    """The global test rows whose label is one of ``labels``, as a named batch."""
    test_y = data.dataset.test_y
    rows = torch.from_numpy(np.isin(test_y.numpy(), np.asarray(labels)))
    batch = data.dataset.test_batch()
    return {name: value[rows] for name, value in batch.items()}
