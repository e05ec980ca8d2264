"""Peak memory of one aggregation: the streaming mean against the stacked median.

K = 1,000 client updates of P = 1,663,370 float32 values (the MNIST CNN) are generated one at
a time and folded into the aggregation pipeline (``begin`` / ``fold`` / ``finish``), as the
round loop does; the benchmark never holds more than the update being folded. Each reducer
runs in its own subprocess, whose peak resident set size (``ru_maxrss``) is reported next to
its size after start-up (Python, torch, one model-sized vector) and the seconds it took:

- the weighted mean folds each update into float64 running sums: its peak should exceed the
  start-up size by a few model sizes (``P x 4`` bytes = 6.7 MB each), whatever ``K``;
- the coordinate median needs every update at once: its ``[K, P]`` float32 stack alone is
  ``K x P x 4`` bytes (6.65 GB at K = 1,000).

Run: ``python -m benchmarks.run_pipeline_memory`` (writes
benchmarks/results/pipeline_memory.json); ``--clients`` and ``--params`` change K and P.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from fedloom.aggregate import CoordinateMedian, RoundInfo, begin, finish, fold, pipeline
from fedloom.types import ClientResult

REDUCERS = {"mean": pipeline(), "median": pipeline(reduce=CoordinateMedian())}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def worker(name: str, clients: int, num_params: int, threads: int) -> dict:
    """Fold ``clients`` generated updates into one pipeline; runs in its own process."""
    torch.set_num_threads(threads)
    p = REDUCERS[name]
    params = torch.zeros(num_params)
    generator = torch.Generator().manual_seed(0)
    started_rss = _peak_rss_bytes()
    started = time.perf_counter()
    run = begin(p, p.init(params), params, info=RoundInfo(), expected=clients)
    for k in range(clients):
        update = torch.randn(num_params, generator=generator) * 0.01
        result = ClientResult(k, update, torch.zeros(0), 1 + k % 7, 1, 1 + k % 7, 0.0)
        run = fold(run, result)
        del update, result
    folded = time.perf_counter()
    step = finish(run).step
    done = time.perf_counter()
    return {
        "reducer": name,
        "stacks": p.reduce.stacks,
        "startup_rss_bytes": started_rss,
        "peak_rss_bytes": _peak_rss_bytes(),
        "peak_above_startup_bytes": _peak_rss_bytes() - started_rss,
        "fold_seconds": folded - started,
        "finish_seconds": done - folded,
        "seconds": done - started,
        "step_norm": float(step.norm()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="K (default 1,000)")
    parser.add_argument("--params", type=int, default=1_663_370, help="P (default: MNIST CNN)")
    parser.add_argument("--reducers", nargs="+", default=list(REDUCERS), choices=list(REDUCERS))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steady on a shared host)"
    )
    parser.add_argument("--out", default="benchmarks/results/pipeline_memory.json")
    parser.add_argument("--worker", choices=list(REDUCERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.clients, args.params, args.threads)))
        return 0
    from benchmarks.run_workloads import machine

    rows = []
    for name in args.reducers:
        command = [sys.executable, "-m", "benchmarks.run_pipeline_memory", "--worker", name]
        command += ["--clients", str(args.clients), "--params", str(args.params)]
        command += ["--threads", str(args.threads)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{name:>6}: peak RSS {row['peak_rss_bytes'] / 1e9:.3f} GB "
            f"({row['peak_above_startup_bytes'] / 1e6:,.0f} MB above start-up), "
            f"{row['seconds']:.1f} s",
            flush=True,
        )
    model_bytes = 4 * args.params
    result = {
        "benchmark": "aggregation pipeline memory: streaming mean vs stacked median",
        "command": "python -m benchmarks.run_pipeline_memory " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "clients": args.clients,
        "params": args.params,
        "torch_threads": args.threads,
        "model_bytes": model_bytes,
        "stack_bytes": args.clients * model_bytes,
        "load_average_1m": os.getloadavg()[0],
        "note": "seconds include generating each update (torch.randn); the host is shared",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
