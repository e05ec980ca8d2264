"""Callbacks observe the round loop (metrics files, progress bars, checkpoints).

They receive values and may do I/O; they never change the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedloom.algorithms import ServerState
from fedloom.types import RoundReport

__all__ = ["Callback", "ClientScores", "History"]


@dataclass(frozen=True)
class History:
    """The outcome of a run: one report per round and the final server state."""

    reports: tuple[RoundReport, ...]
    final_state: ServerState

    def records(self) -> list[dict[str, float]]:
        """The per-round metrics as plain dicts (``round`` first)."""
        return [report.as_record() for report in self.reports]

    def metric(self, name: str) -> list[float]:
        """One metric across rounds (rounds without it are skipped)."""
        return [r.metrics[name] for r in self.reports if name in r.metrics]


class Callback:
    """Base with no-op hooks; override what you need.

    A callback that sets ``stop_requested = True`` ends the run after the current round
    (early stopping at a target accuracy, a time budget...).
    """

    stop_requested: bool = False

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        """Before the first round."""

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        """After :meth:`on_start` when the run continues from a checkpoint: the rounds
        already done (``state`` is the state after the last of them)."""

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        """After each round, with the round's report and the new server state."""

    def on_client_scores(self, round: int, scores: Mapping[str, np.ndarray]) -> None:
        """After an evaluation that scored every client on its held-out split (``simulate``
        with ``eval_clients``), before :meth:`on_round` of the same ``round`` (1-based):
        each client's score (the task's ``score``: accuracy for classification; NaN for a
        client without held-out rows), ``[num_clients]``, by metric prefix: ``"client"``
        (the global model), ``"client_personal"`` (personalized models: FedPer, FedBN,
        Ditto), ``"client_finetuned"`` (``finetune_steps``). The metrics hold only their
        spread; this is the whole vector (:class:`ClientScores` keeps them)."""

    def on_end(self, history: History) -> None:
        """After the last round."""


class ClientScores(Callback):
    """Keeps every client's held-out score from each evaluation: per-client accuracy
    plots, the worst client, a client-by-client comparison of two runs.

    >>> scores = ClientScores()
    >>> scores.on_client_scores(3, {"client": np.array([0.5, 1.0])})
    >>> scores.last["client"].tolist(), list(scores.by_round)
    ([0.5, 1.0], [3])
    """

    def __init__(self) -> None:
        self.by_round: dict[int, dict[str, np.ndarray]] = {}

    def on_client_scores(self, round: int, scores: Mapping[str, np.ndarray]) -> None:
        self.by_round[round] = {
            prefix: np.array(v, dtype=np.float64) for prefix, v in scores.items()
        }

    @property
    def last(self) -> dict[str, np.ndarray]:
        """The scores of the latest evaluation (empty before the first)."""
        return self.by_round[max(self.by_round)] if self.by_round else {}


def notify_round(callbacks: Sequence[Callback], report: RoundReport, state: ServerState) -> None:
    for callback in callbacks:
        callback.on_round(report, state)
