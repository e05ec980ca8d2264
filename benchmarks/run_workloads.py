"""Simulation workloads W1-W3 of ../shared/BENCHMARKS.md and their centralized floors.

    make bench                    # or: python -m benchmarks.run_workloads [--workloads W1,W2]

Throughput = client example-passes / wall seconds over steady-state rounds (one warm-up round
first), the median of the measured rounds. Floors: a plain single-process PyTorch loop
(``nn.Module`` + ``torch.optim.SGD``) over the same number of example-passes with batch B and
with batch K*B, the median of ``--repeats`` runs. Results go to benchmarks/results/ with the
machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import fedloom as fl
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import IID, QuantitySkew, federate
from fedloom.engine import plans_for_round
from fedloom.params import flatten_buffers, flatten_params
from fedloom.report.machine import cpu_name
from fedloom.sim import ProcessExecutor, SequentialExecutor, VectorizedExecutor
from fedloom.simulation import initial_module

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Workload:
    id: str
    name: str
    partitioner: Callable
    model: Callable[[], nn.Module]
    clients_per_round: int
    num_clients: int
    batch_size: int = 10
    lr: float = 0.05


WORKLOADS = {
    "W1": Workload("W1", "mcmahan-cnn", IID(100), fl.models.mnist_cnn, 10, 100),
    "W2": Workload("W2", "many-small", IID(1000), fl.models.mnist_2nn, 100, 1000),
    "W3": Workload(
        "W3",
        "power-law",
        QuantitySkew(1000, sigma=1.0, min_size=10),
        fl.models.mnist_2nn,
        100,
        1000,
    ),
}


def machine() -> dict:
    cpu = cpu_name()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fedloom": fl.__version__,
        "platform": platform.platform(),
    }


def floor_throughput(
    mnist, workload: Workload, num_examples: int, batch_size: int, repeats: int
) -> float:
    """Examples/s of a plain PyTorch training loop over ``num_examples`` example-passes."""
    module = workload.model()
    optimizer = torch.optim.SGD(module.parameters(), lr=workload.lr)
    rng = np.random.default_rng(0)
    times = []
    for repeat in range(repeats + 1):  # the first pass is a warm-up
        order = torch.from_numpy(rng.permutation(len(mnist.train_y))[:num_examples])
        started = time.perf_counter()
        for i in range(0, num_examples, batch_size):
            index = order[i : i + batch_size]
            optimizer.zero_grad()
            nn.functional.cross_entropy(
                module(mnist.train_x[index]), mnist.train_y[index]
            ).backward()
            optimizer.step()
        if repeat:
            times.append(time.perf_counter() - started)
    return num_examples / statistics.median(times)


ENGINES = {
    "sequential": SequentialExecutor,
    "vectorized": VectorizedExecutor,
    "process": ProcessExecutor,
    "ray": lambda *args, **kwargs: _ray_executor()(*args, **kwargs),
}


def _ray_executor():
    from fedloom.sim.ray_executor import RayExecutor  # optional dependency

    return RayExecutor


def engine_throughput(mnist, workload: Workload, engine: str, rounds: int) -> dict:
    """One engine: examples/s per steady-state round, and start-up to the first round's end."""
    started = time.perf_counter()
    data = federate(mnist, workload.partitioner, holdout_fraction=0.0, seed=0)
    module = initial_module(workload.model, seed=0)
    executor = ENGINES[engine](
        module, data, LocalTraining(epochs=1, batch_size=workload.batch_size, lr=workload.lr)
    )
    params, buffers = flatten_params(module), flatten_buffers(module)
    fraction = workload.clients_per_round / workload.num_clients
    per_round = []
    startup_s = None
    for t in range(rounds + 1):
        plans = plans_for_round(data.num_clients, fraction, seed=0, round=t)
        round_started = time.perf_counter()
        results = executor.fit(
            plans, params, {p.client_id: buffers for p in plans}, LocalContext(params)
        )
        params = params + torch.stack([r.update for r in results]).mean(0)
        elapsed = time.perf_counter() - round_started
        passes = sum(r.num_example_passes for r in results)
        if t == 0:
            startup_s = time.perf_counter() - started
        else:
            per_round.append((passes, elapsed))
    close = getattr(executor, "close", None)
    if close is not None:
        close()
    throughputs = [p / e for p, e in per_round]
    return {
        "examples_per_round": statistics.median(p for p, _ in per_round),
        "throughput": statistics.median(throughputs),
        "round_s": statistics.median(e for _, e in per_round),
        "startup_s": startup_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", default="W1,W2,W3", help="comma-separated ids (default W1,W2,W3)"
    )
    parser.add_argument(
        "--engines",
        default="sequential,vectorized,process",
        help="comma-separated engines to measure (sequential, vectorized, process, ray)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds after one warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each floor")
    parser.add_argument("--data-root", default=None, help="MNIST root (default $FEDLOOM_DATA)")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args(argv)
    console = Console(width=150)
    mnist = fl.load_mnist(args.data_root)
    rows = []
    engines = [e.strip() for e in args.engines.split(",")]
    for workload_id in args.workloads.split(","):
        workload = WORKLOADS[workload_id.strip()]
        measured = {}
        for engine in engines:
            console.print(f"[bold]{workload.id} {workload.name}[/]: {engine} engine ...")
            measured[engine] = engine_throughput(mnist, workload, engine, args.rounds)
        n = int(next(iter(measured.values()))["examples_per_round"])
        console.print(f"  floors over {n:,} example-passes ...")
        floor_b = floor_throughput(mnist, workload, n, workload.batch_size, args.repeats)
        floor_kb = floor_throughput(
            mnist, workload, n, workload.batch_size * workload.clients_per_round, args.repeats
        )
        for engine, figures in measured.items():
            rows.append(
                {
                    "workload": workload.id,
                    "name": workload.name,
                    "engine": engine,
                    **figures,
                    "floor_batch_B": floor_b,
                    "floor_batch_KB": floor_kb,
                    "ratio_to_floor_B": figures["throughput"] / floor_b,
                    "ratio_to_floor_KB": figures["throughput"] / floor_kb,
                    "ratio_to_sequential": figures["throughput"]
                    / measured.get("sequential", figures)["throughput"],
                }
            )
    table = Table(title="simulation throughput (examples/s, median)")
    for column in (
        "workload",
        "engine",
        "throughput",
        "floor B",
        "floor K*B",
        "vs floor B",
        "vs floor K*B",
        "vs sequential",
        "round s",
        "start-up s",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            f"{r['workload']} {r['name']}",
            r["engine"],
            f"{r['throughput']:,.0f}",
            f"{r['floor_batch_B']:,.0f}",
            f"{r['floor_batch_KB']:,.0f}",
            f"{r['ratio_to_floor_B']:.2f}x",
            f"{r['ratio_to_floor_KB']:.2f}x",
            f"{r['ratio_to_sequential']:.2f}x",
            f"{r['round_s']:.2f}",
            f"{r['startup_s']:.2f}",
        )
    console.print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(
            ["python -m benchmarks.run_workloads", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "settings": {"rounds": args.rounds, "repeats": args.repeats},
        "results": rows,
    }
    (out / "workloads.json").write_text(json.dumps(report, indent=2))
    console.print(f"results written to {out / 'workloads.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
