"""Benchmark A1 of ../shared/BENCHMARKS.md: one aggregation of K client updates.

K = 100 updates of P = 1,663,370 float32 values (the MNIST CNN): weighted mean (one matmul over
the stack, and as the pipeline runs it: folded row by row into float64 sums), coordinate-wise
median, trimmed mean (10%), Krum (f = 10), geometric median, plus norm bounding (a clip stage
in front of the streaming mean, folding the K rows one at a time) and centered clipping. The floor is this machine's memory bandwidth, measured in the same run as a plain
``torch.sum`` over the same K x P tensor. Reported per rule: the median of ``--repeats``
timings, the effective bandwidth (bytes of updates read / seconds) and the ratio to the floor.

Run: ``python -m benchmarks.run_aggregators`` (writes benchmarks/results/aggregators.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.run_workloads import machine
from fedloom.aggregate import (
    CenteredClipping,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    Mean,
    TrimmedMean,
    aggregate_stack,
    clip,
    pipeline,
)

NORM_BOUND = pipeline(per_client=clip(1.0))
RULES = {
    "weighted mean": Mean(),
    "weighted mean, streamed": lambda updates, weights: aggregate_stack(
        pipeline(), updates, weights
    )[0],
    "coordinate median": CoordinateMedian(),
    "trimmed mean (10%)": TrimmedMean(0.1),
    "Krum (f = 10)": Krum(f=10),
    "geometric median": GeometricMedian(),
    "norm bound + mean": lambda updates, weights: aggregate_stack(NORM_BOUND, updates, weights)[0],
    "centered clipping (3 it.)": CenteredClipping(1.0, 3),
}


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="K (default 100)")
    parser.add_argument("--params", type=int, default=1_663_370, help="P (default: MNIST CNN)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/aggregators.json")
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    updates = torch.randn(args.clients, args.params, generator=generator) * 0.01
    weights = torch.full((args.clients,), 1.0 / args.clients)
    size = updates.numel() * updates.element_size()
    floor_s = _time(lambda: torch.sum(updates), args.repeats)
    rows = []
    for name, rule in RULES.items():
        seconds = _time(lambda rule=rule: rule(updates, weights), args.repeats)
        rows.append(
            {
                "rule": name,
                "seconds": seconds,
                "bandwidth_gb_s": size / seconds / 1e9,
                "vs_floor": floor_s / seconds,
            }
        )
    result = {
        "benchmark": "A1 aggregate",
        "command": "python -m benchmarks.run_aggregators " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "clients": args.clients,
        "params": args.params,
        "bytes": size,
        "floor": {"rule": "torch.sum", "seconds": floor_s, "bandwidth_gb_s": size / floor_s / 1e9},
        "rules": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = Table(
        title=f"A1: K = {args.clients} updates x P = {args.params:,} ({size / 1e6:.0f} MB)"
    )
    for column in ("rule", "seconds", "GB/s", "vs floor"):
        table.add_column(column, justify="right" if column != "rule" else "left")
    table.add_row("torch.sum (floor)", f"{floor_s:.3f}", f"{size / floor_s / 1e9:.1f}", "1.00x")
    for row in rows:
        table.add_row(
            row["rule"],
            f"{row['seconds']:.3f}",
            f"{row['bandwidth_gb_s']:.2f}",
            f"{row['vs_floor']:.3f}x",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
