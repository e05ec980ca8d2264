"""What a person sees in the terminal: a progress bar while rounds run, a summary table after."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fedloom.algorithms import ServerState
from fedloom.engine import Callback, History
from fedloom.types import RoundReport

__all__ = ["ProgressBar", "summary_table"]


class ProgressBar(Callback):
    """A rich progress bar: round, the task's test score, clients/s and examples/s."""

    def __init__(self, console: Console, description: str = "rounds", *, score: str = "accuracy"):
        self.console = console
        self.score = score
        self.description = description
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=num_rounds, status="")

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=len(reports), status="resumed")

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        m = report.metrics
        wall = max(m.get("wall_s", 0.0), 1e-9)
        parts = []
        if f"test_{self.score}" in m:
            parts.append(f"{_short(self.score)} {m[f'test_{self.score}']:.3f}")
        if "dp_epsilon" in m:
            parts.append(f"eps {m['dp_epsilon']:.2f}")
        parts.append(f"{m.get('num_results', 0) / wall:,.0f} clients/s")
        parts.append(f"{m.get('examples_processed', 0) / wall:,.0f} ex/s")
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, status="  ".join(parts))

    def on_end(self, history: History) -> None:
        if self.progress is not None:
            self.progress.stop()


def _last(records: Sequence[dict], key: str) -> float | None:
    for record in reversed(records):
        if record.get(key) is not None:
            return record[key]
    return None


def _short(score: str) -> str:
    return "acc" if score == "accuracy" else score


def summary_table(
    history: History,
    *,
    title: str,
    run_dir: Path | None,
    elapsed_s: float,
    score: str = "accuracy",
    higher_is_better: bool = True,
) -> Table:
    """The end-of-run table: the final and best value of the task's ``score`` (accuracy),
    its spread over clients, time and traffic."""
    records = history.records()
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def row(label: str, value: float | None, fmt: str) -> None:
        table.add_row(label, "-" if value is None else format(value, fmt))

    key, label = f"test_{score}", score.replace("_", " ")
    values = [r[key] for r in records if r.get(key) is not None]
    best = (max if higher_is_better else min)(values) if values else None
    row("rounds", len(records), "d")
    row(f"final test {label}", _last(records, key), ".4f")
    row(f"best test {label}", best, ".4f")
    row("final test loss", _last(records, "test_loss"), ".4f")
    client = f"client_{score}"
    row(f"client {label} mean", _last(records, f"{client}_mean"), ".4f")
    row(f"client {label} std", _last(records, f"{client}_std"), ".4f")
    row(f"client {label} worst 10%", _last(records, f"{client}_worst10"), ".4f")
    row(f"client {label} best 10%", _last(records, f"{client}_best10"), ".4f")
    row("smallest 10% of clients", _last(records, f"{client}_smallest10"), ".4f")
    personal = f"client_personal_{score}"
    if _last(records, f"{personal}_mean") is not None:  # FedPer, FedBN, Ditto
        row(f"personalized client {label} mean", _last(records, f"{personal}_mean"), ".4f")
        row("personalized worst 10%", _last(records, f"{personal}_worst10"), ".4f")
    tuned = f"client_finetuned_{score}"
    if _last(records, f"{tuned}_mean") is not None:  # eval.finetune_steps: fine-tuned models
        row(f"fine-tuned client {label} mean", _last(records, f"{tuned}_mean"), ".4f")
        row("fine-tuned worst 10%", _last(records, f"{tuned}_worst10"), ".4f")
    if _last(records, "dp_epsilon") is not None:  # a differentially private run
        row("privacy spent (epsilon)", _last(records, "dp_epsilon"), ".3f")
    row("examples processed", sum(r.get("examples_processed", 0) for r in records), ",.0f")
    row("MB down + up", sum(r["bytes_down"] + r["bytes_up"] for r in records) / 1e6, ",.1f")
    row("wall seconds", elapsed_s, ".1f")
    if run_dir is not None:
        table.add_row("run directory", str(run_dir))
    return table
