"""Callbacks observe the round loop (metrics files, progress bars, checkpoints).

They receive values and may do I/O; they never change the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedloom.algorithms import ServerState
from fedloom.types import RoundReport

__all__ = ["Callback", "History"]


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

    def on_end(self, history: History) -> None:
        """After the last round."""


def notify_round(callbacks: Sequence[Callback], report: RoundReport, state: ServerState) -> None:
    for callback in callbacks:
        callback.on_round(report, state)
