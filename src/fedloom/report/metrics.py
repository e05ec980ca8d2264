"""Metrics files: ``metrics.jsonl`` (written as rounds finish) and ``metrics.csv`` (at the end)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from fedloom.algorithms import ServerState
from fedloom.engine import Callback, History
from fedloom.types import RoundReport

__all__ = ["MetricsFiles", "read_metrics"]


def _jsonable(value: float) -> float | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsFiles(Callback):
    """Append one JSON line per round (flushed, so a crashed run keeps its rounds)."""

    def __init__(self, run_dir: Path):
        self.jsonl = run_dir / "metrics.jsonl"
        self.csv = run_dir / "metrics.csv"

    def on_start(self, num_rounds: int, state: ServerState) -> None:
        self.jsonl.write_text("")

    def on_resume(self, reports: tuple[RoundReport, ...], state: ServerState) -> None:
        for report in reports:
            self.on_round(report, state)

    def on_round(self, report: RoundReport, state: ServerState) -> None:
        record = {k: _jsonable(v) for k, v in report.as_record().items()}
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_end(self, history: History) -> None:
        records = history.records()
        columns = list(dict.fromkeys(key for record in records for key in record))
        with self.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The per-round records of a run directory's ``metrics.jsonl``."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
