"""Benchmark of secure aggregation (issue 15): time and bytes per client and for the server,
against plain FedAvg aggregation, for cohorts of n = 10, 50, 100, 500 clients.

One round of aggregation of n updates of P = 199,210 float32 values (the MNIST 2NN), example
counts 1..100, as the pipeline runs it:

- **plain**: FedAvg's streaming weighted mean (``Mean``) folding the n float32 updates; each
  client sends its update and its count (4 P + 8 bytes), receives nothing more.
- **secure**: the ``SecureSum`` reducer (``server.secure_aggregation``), which runs the whole
  protocol (Bonawitz et al. 2017; SecAgg+ with ``k`` neighbors for the larger cohorts)
  with every message encoded to bytes: key advertisement, encrypted Shamir shares, masked
  inputs, unmasking. Bytes are the encoded protocol messages each client sends and receives
  (the model broadcast is the same in both and left out); client seconds are the mean time
  one client spends in its own code (all clients run one after another in this process);
  server seconds are the server's. Rows with ``--dropout`` let that fraction of each cohort
  drop after sharing keys, so the server also reconstructs their mask keys and removes
  their pairwise masks (the recovery path).

Run: ``python -m benchmarks.secagg`` (all sizes; writes benchmarks/results/secagg.json), or
``python -m benchmarks.secagg --clients 10,50`` for the small ones.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.run_workloads import machine
from fedloom.aggregate import RoundInfo, aggregate_stack, pipeline
from fedloom.privacy.secagg import SecAggConfig
from fedloom.privacy.secagg.stage import SecureSum

MNIST_2NN = 199_210
BITS = 32
CLIP_RANGE = 4.0  # above every n_k u_k coordinate of the generated updates (|u| < 0.04)


def neighbors_for(n: int) -> int | None:
    """SecAgg+ for cohorts of 100 and more: ``k`` the even number at or above ``2 log2 n``
    (Bell et al. 2020 need ``k = O(log n)``; 14 for 100, 18 for 500); below, the complete
    graph."""
    if n < 100:
        return None
    k = math.ceil(2 * math.log2(n))
    return k + (k % 2)


def measure(n: int, num_params: int, dropout: float, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    updates = (torch.rand(n, num_params, generator=generator) - 0.5) * 0.08
    counts = torch.randint(1, 101, (n,), generator=generator).double()
    info = RoundInfo(seed=seed, round=0)

    plain_times = []
    for _ in range(4):  # the first is a warm-up; the median of the other 3
        started = time.perf_counter()
        plain, _ = aggregate_stack(pipeline(), updates, counts, info=info)
        plain_times.append(time.perf_counter() - started)
    plain_s = statistics.median(plain_times[1:])

    k = neighbors_for(n)
    settings = SecAggConfig(bits=BITS, clip_range=CLIP_RANGE, neighbors=k)
    params = settings.for_cohort(n)
    stage = SecureSum(settings, dropout_fraction=dropout, dropout_after="share")
    started = time.perf_counter()
    secure, state = aggregate_stack(pipeline(reduce=stage), updates, counts, info=info)
    wall_s = time.perf_counter() - started
    stats = state["reduce"]
    in_sum = int(stats["in_sum"])
    survivors = [c for c in range(n) if c not in stage.dropouts(list(range(n)), info)]
    reference, _ = aggregate_stack(pipeline(), updates[survivors], counts[survivors], info=info)
    bound = stage.error_bound(in_sum, float(counts[survivors].sum()), n)
    error = float((secure.double() - reference.double()).abs().max())
    # both steps are rounded to float32 once: half an ulp each of the largest coordinate
    slack = float(torch.finfo(torch.float32).eps) * float(reference.abs().max())
    plain_up = 4 * num_params + 8
    return {
        "clients": n,
        "params": num_params,
        "neighbors": k,
        "threshold": params.threshold,
        "value_bits": params.quantizer.value_bits,
        "dropout": dropout,
        "in_sum": in_sum,
        "max_error": error,
        "error_bound": bound,
        "float32_slack": slack,
        "within_bound": error <= bound + slack,
        "plain": {
            "bytes_up_per_client": plain_up,
            "bytes_down_per_client": 0,
            "server_bytes_in": n * plain_up,
            "server_s": plain_s,
        },
        "secure": {
            "bytes_up_per_client": stats["bytes_up_per_client"],
            "bytes_down_per_client": stats["bytes_down_per_client"],
            "server_bytes_in": stats["bytes_up_per_client"] * n,
            "server_bytes_out": stats["bytes_down_per_client"] * n,
            "client_s": stats["client_s"],
            "server_s": stats["server_s"],
            "round_wall_s": wall_s,
        },
        "bytes_up_vs_plain": stats["bytes_up_per_client"] / plain_up,
        "plain_step_vs_secure_max_diff": float((secure - plain).abs().max())
        if not dropout
        else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,50,100,500", help="cohort sizes, comma-separated")
    parser.add_argument("--params", type=int, default=MNIST_2NN, help="P (default: MNIST 2NN)")
    parser.add_argument(
        "--dropout", default="0,0.1", help="dropout fractions (after sharing keys), one row each"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/secagg.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)  # the protocol is single-threaded NumPy and AES
    sizes = [int(x) for x in args.clients.split(",")]
    dropouts = [float(x) for x in args.dropout.split(",")]
    rows = []
    for n in sizes:
        for dropout in dropouts:
            rows.append(measure(n, args.params, dropout, args.seed))
            secure = rows[-1]["secure"]
            print(f"n = {n}, dropout {dropout:g}: {secure['round_wall_s']:.1f} s", flush=True)
    result = {
        "benchmark": "secure aggregation vs plain FedAvg aggregation",
        "command": "python -m benchmarks.secagg " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "bits": BITS,
        "clip_range": CLIP_RANGE,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = Table(title=f"Secure aggregation, P = {args.params:,}, {BITS}-bit group")
    columns = ("n", "k", "t", "drop", "up/client", "vs plain", "down/client", "client s",
               "server s", "plain server s", "max err", "bound + f32")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        s = row["secure"]
        table.add_row(
            str(row["clients"]),
            str(row["neighbors"] or "all"),
            str(row["threshold"]),
            f"{row['dropout']:.0%}",
            f"{s['bytes_up_per_client'] / 1e6:.3f} MB",
            f"{row['bytes_up_vs_plain']:.2f}x",
            f"{s['bytes_down_per_client'] / 1e3:.1f} kB",
            f"{s['client_s']:.3f}",
            f"{s['server_s']:.3f}",
            f"{row['plain']['server_s']:.4f}",
            f"{row['max_error']:.2e}",
            f"{row['error_bound'] + row['float32_slack']:.2e}",
        )
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
