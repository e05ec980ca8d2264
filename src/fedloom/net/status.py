"""The operator's view of a running server: one live status line, and one log line per round.

    round 3/5 | 9/10 clients connected | 4/5 updates (1 refused) | acc 0.912 | 12 s

On a terminal the line refreshes in place (rich ``Live``); in a log file or a pipe each
finished round prints one line instead, so the output stays readable.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from fedloom.algorithms import ServerState
from fedloom.engine import Callback, History
from fedloom.net.board import RoundBoard
from fedloom.types import RoundReport

__all__ = ["StatusLine", "status_text"]


def status_text(
    board: RoundBoard, *, rounds: int, done: int, accuracy: float | None, elapsed_s: float
) -> str:
    status = board.status()
    number = status.round if status.round is not None else min(done + 1, rounds)
    parts = [
        f"round {number}/{rounds}",
        f"{status.connected}/{len(board.access.clients)} clients connected",
    ]
    if status.round is not None:
        refused = f" ({status.rejected} refused)" if status.rejected else ""
        parts.append(f"{status.received}/{status.selected} updates{refused}")
    else:
        parts.append("aggregating" if done < rounds else "done")
    if accuracy is not None:
        parts.append(f"acc {accuracy:.3f}")
    parts.append(f"{elapsed_s:.0f} s")
    return " | ".join(parts)


class StatusLine(Callback):
    """Shows :func:`status_text` while the run lasts."""

    def __init__(self, board: RoundBoard, console: Console):
        self.board = board
        self.console = console
        self.rounds = 0
        self.done = 0
        self.accuracy: float | None = None
        self.started = time.monotonic()
        self.live: Live | None = None

    def _text(self) -> Text:
        return Text(
            status_text(
                self.board,
                rounds=self.rounds,
                done=self.done,
                accuracy=self.accuracy,
                elapsed_s=time.monotonic() - self.started,
            )
        )

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        self.rounds = num_rounds
        if self.console.is_terminal:
            self.live = Live(get_renderable=self._text, console=self.console, refresh_per_second=2)
            self.live.start()

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        self.done = len(reports)
        self.accuracy = next(
            (r.metrics["test_accuracy"] for r in reversed(reports) if "test_accuracy" in r.metrics),
            None,
        )
        self.console.print(f"resumed from the checkpoint after round {self.done}")

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        self.done = report.round
        self.accuracy = report.metrics.get("test_accuracy", self.accuracy)
        m = report.metrics
        line = (
            f"round {report.round}/{self.rounds}: {m.get('num_results', 0):.0f} of "
            f"{m.get('num_clients', 0):.0f} updates used"
        )
        if m.get("num_failures"):
            line += f", {m['num_failures']:.0f} missing or refused"
        if "test_accuracy" in m:
            line += f", test accuracy {m['test_accuracy']:.4f}"
        line += f" ({m.get('wall_s', 0.0):.1f} s)"
        self.console.print(line)

    def on_end(self, history: History) -> None:
        self.close()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
