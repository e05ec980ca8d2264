"""What experiment tracking costs per round: TensorBoard and MLflow against no tracking.

The same simulated run (the embedded default: digits, 20 clients, 10 per round, 3 local
epochs, vectorized engine) runs with no tracker, with TensorBoard (scalars plus per-client
histograms) and with MLflow (a local SQLite store), interleaved ``--repeats`` times so that
machine load hits all three alike. The figure is each tracker's median seconds per round over
the median without one; the goal is under 5% more. Start-up (creating the MLflow database,
importing the libraries) is reported apart: it is paid once per run, not per round.

Run: ``python -m benchmarks.tracking_overhead`` (writes benchmarks/results/tracking.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.run_workloads import machine
from fedloom.config import RunConfig, build_run
from fedloom.engine import Callback
from fedloom.experiment import simulate_config
from fedloom.report.tracking import MLflowLogger, TensorBoardLogger


class _Clock(Callback):
    """Seconds from the end of one round's callbacks to the end of the next's."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_start(self, num_rounds, state) -> None:  # type: ignore[no-untyped-def]
        self.marks = [time.perf_counter()]

    def on_round(self, report, state) -> None:  # type: ignore[no-untyped-def]
        self.marks.append(time.perf_counter())


def _trackers(kind: str, folder: Path) -> list[Callback]:
    if kind == "tensorboard":
        return [TensorBoardLogger(folder / "tb")]
    if kind == "mlflow":
        return [MLflowLogger(f"sqlite:///{folder / 'mlflow.db'}", run_name="bench")]
    return []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/tracking.json")
    args = parser.parse_args(argv)
    config = RunConfig.from_dict({"rounds": args.rounds})
    spec = build_run(config)
    per_round: dict[str, list[float]] = {"off": [], "tensorboard": [], "mlflow": []}
    startup: dict[str, list[float]] = {k: [] for k in per_round}
    for _ in range(args.repeats):
        for kind in per_round:
            with tempfile.TemporaryDirectory() as folder:
                clock = _Clock()
                started = time.perf_counter()
                simulate_config(config, spec=spec, callbacks=[*_trackers(kind, Path(folder)),
                                                              clock])  # fmt: skip
                total = time.perf_counter() - started
                rounds = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
                # the trackers' per-round work happens before the clock's mark of that round,
                # so round 2 onwards is steady state; round 1 also pays imports and set-up
                per_round[kind].extend(rounds[1:])
                startup[kind].append(total - sum(rounds[1:]) - statistics.median(rounds[1:]))
    base = statistics.median(per_round["off"])
    rows = {
        kind: {
            "median_s_per_round": statistics.median(times),
            "overhead_percent": 100 * (statistics.median(times) / base - 1),
            "startup_s": statistics.median(startup[kind]) - statistics.median(startup["off"]),
        }
        for kind, times in per_round.items()
    }
    result = {
        "command": "python -m benchmarks.tracking_overhead " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = Table(title="tracking overhead (digits default run)")
    for column in ("tracker", "s / round (median)", "overhead", "one-time start-up s"):
        table.add_column(column, justify="right")
    for kind, row in rows.items():
        table.add_row(kind, f"{row['median_s_per_round']:.3f}",
                      f"{row['overhead_percent']:+.1f}%", f"{row['startup_s']:.2f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
