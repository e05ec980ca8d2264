"""Compression: test accuracy against the bytes the clients upload, for each compressor.

MNIST, the 2NN of McMahan et al. 2017 (199,210 parameters), 50 clients with IID shares,
10 a round (C = 0.2), one local epoch (B = 50, lr = 0.1), FedAvg, 40 rounds, 2 seeds (each
its own split, initial weights, batches and compressor randomness). Only the update is
compressed (the broadcast stays float32), so the x axis is the cumulative ``bytes_up`` of the
run: the summed lengths of the codes the clients sent (:mod:`fedloom.compress`).

Compressors: float32 (none), fp16, bf16, int8 (one scale per update), int4 (a scale per 256
values), QSGD with 16 levels in buckets of 512 (Alistarh et al. 2017: 6 bits a value here,
fixed width), top-k with 1% of the values with error feedback (Stich et al. 2018), and top-k
1% without it (what error feedback is for).

Reported per compressor: the test accuracy after every round, the upload bytes per client
per round, the compression ratio over float32, the final accuracy (mean over seeds) and the
upload bytes to first reach ``TARGET`` accuracy (mean over seeds; ``None`` if a seed never
did). The claims are computed from these numbers (:func:`claims`).

``quick``: one seed, 10 rounds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.algorithms import fedavg
from fedloom.client import LocalTraining
from fedloom.compress import QSGD, BFloat16, Compression, Float16, IntQuantizer, TopK
from fedloom.data import IID, FederatedDataset, federate, load_mnist
from fedloom.models import mnist_2nn
from fedloom.simulation import simulate
from fedloom.studies._results import write_results

__all__ = ["COMPRESSORS", "TARGET", "accuracy_within", "claims", "run", "table"]

COMPRESSORS: dict[str, Compression | None] = {
    "float32": None,
    "fp16": Compression(upload=Float16()),
    "bf16": Compression(upload=BFloat16()),
    "int8": Compression(upload=IntQuantizer(bits=8)),
    "int4 (blocks of 256)": Compression(upload=IntQuantizer(bits=4, block_size=256)),
    "QSGD s=16 (buckets of 512)": Compression(upload=QSGD(levels=16, block_size=512)),
    "top-k 1% + EF": Compression(upload=TopK(fraction=0.01), error_feedback=True),
    "top-k 1%, no EF": Compression(upload=TopK(fraction=0.01)),
}
TARGET = 0.95
NUM_CLIENTS = 50
FRACTION = 0.2
LOCAL = LocalTraining(epochs=1, batch_size=50, lr=0.1)


def _one(data: FederatedDataset, compression: Compression | None, rounds: int, seed: int) -> dict:
    algorithm = fedavg().with_compression(compression)
    history = simulate(
        algorithm,
        data,
        mnist_2nn,
        rounds=rounds,
        fraction=FRACTION,
        local=LOCAL,
        seed=seed,
        engine="sequential",
        eval_clients=False,
    )
    accuracy = history.metric("test_accuracy")
    uploaded = np.cumsum(history.metric("bytes_up")).tolist()
    reached = next((b for a, b in zip(accuracy, uploaded, strict=True) if a >= TARGET), None)
    per_client = history.reports[0].metrics["bytes_up"] / history.reports[0].metrics["num_results"]
    return {
        "accuracy": [round(a, 4) for a in accuracy],
        "cumulative_bytes_up": uploaded,
        "bytes_to_target": reached,
        "bytes_per_update": per_client,
    }


def accuracy_within(results: dict[str, Any], name: str, budget: float) -> float | None:
    """``name``'s accuracy (mean over seeds) after its last round whose cumulative upload
    stayed within ``budget`` bytes; ``None`` when its first round already exceeded it."""
    c = results["compressors"][name]
    within = [
        a for a, b in zip(c["accuracy"], c["cumulative_bytes_up"], strict=True) if b <= budget
    ]
    return within[-1] if within else None


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """What the numbers say, against float32: int8 ends within half a point with 3.9x fewer
    upload bytes, int4 (blocks of 256) reaches the target accuracy with 7x fewer bytes;
    top-k 1% + EF ends within 2 points with 40x fewer, and for the bytes it sent in the whole
    run no other compressor is as accurate; error feedback adds at least a point to top-k in
    every seed; fp16 and bf16 change the final accuracy by at most 0.2 points."""
    c = results["compressors"]
    base = c["float32"]
    topk, plain = c["top-k 1% + EF"], c["top-k 1%, no EF"]

    def close(name: str, points: float) -> bool:
        return bool(c[name]["final_accuracy"] >= base["final_accuracy"] - points)

    def fewer_to_target(name: str) -> float:
        reached = c[name]["bytes_to_target"]
        return base["bytes_to_target"] / reached if reached and base["bytes_to_target"] else 0.0

    budget = topk["cumulative_bytes_up"][-1]
    others = [accuracy_within(results, name, budget) for name in c if name != "top-k 1% + EF"]
    return {
        "int8_within_half_a_point_at_3.9x": close("int8", 0.005) and c["int8"]["ratio"] >= 3.9,
        "int4_reaches_the_target_with_7x_fewer_bytes": fewer_to_target("int4 (blocks of 256)") >= 7,
        "topk_ef_within_2_points_at_40x": close("top-k 1% + EF", 0.02) and topk["ratio"] >= 40,
        "topk_ef_most_accurate_for_its_bytes": all(
            a is None or a < topk["final_accuracy"] for a in others
        ),
        "error_feedback_adds_a_point_to_topk_in_every_seed": all(
            ef >= no + 0.01
            for ef, no in zip(
                topk["final_accuracy_per_seed"], plain["final_accuracy_per_seed"], strict=True
            )
        ),
        "half_precision_changes_nothing": close("fp16", 0.002) and close("bf16", 0.002),
    }


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int = 40,
    seeds: tuple[int, ...] = (0, 1),
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run every compressor for each seed; return (and write) accuracy against bytes."""
    if quick:
        rounds, seeds = 10, (0,)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    dataset = load_mnist(data_root, download=False)
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in COMPRESSORS}
    try:
        for seed in seeds:
            data = federate(dataset, IID(NUM_CLIENTS), holdout_fraction=0.0, seed=seed)
            for name, compression in COMPRESSORS.items():
                per_seed[name].append(_one(data, compression, rounds, seed))
    finally:
        torch.set_num_threads(threads)
    base = per_seed["float32"][0]["bytes_per_update"]
    compressors = {}
    for name, runs in per_seed.items():
        reached = [r["bytes_to_target"] for r in runs]
        compressors[name] = {
            "bytes_per_update": runs[0]["bytes_per_update"],
            "ratio": round(base / runs[0]["bytes_per_update"], 2),
            "final_accuracy": round(float(np.mean([r["accuracy"][-1] for r in runs])), 4),
            "final_accuracy_per_seed": [r["accuracy"][-1] for r in runs],
            "bytes_to_target": None if None in reached else float(np.mean(reached)),
            "accuracy": np.mean([r["accuracy"] for r in runs], axis=0).round(4).tolist(),
            "cumulative_bytes_up": runs[0]["cumulative_bytes_up"],
        }
    results: dict[str, Any] = {
        "setting": {
            "dataset": "mnist",
            "model": "mnist_2nn",
            "clients": NUM_CLIENTS,
            "partition": "iid",
            "fraction": FRACTION,
            "rounds": rounds,
            "seeds": list(seeds),
            "local": {"epochs": 1, "batch_size": 50, "lr": 0.1},
            "algorithm": "fedavg",
            "target_accuracy": TARGET,
            "broadcast": "float32",
        },
        "compressors": compressors,
        "seconds": round(time.perf_counter() - start, 1),
    }
    results["claims"] = claims(results)
    write_results(out_dir, "compression", results)
    if out_dir is not None:
        _plot(results, out_dir / "compression.png")
    return results


def table(results: dict[str, Any]) -> str:
    """The README table."""
    target = results["setting"]["target_accuracy"]
    rows = [
        f"| compressor | bytes per update | ratio | final accuracy | upload bytes to {target:.0%} |",
        "|---|---|---|---|---|",
    ]
    for name, c in results["compressors"].items():
        done = c["bytes_to_target"]
        reach = "not in every seed" if done is None else f"{done / 1e6:.1f} MB"
        rows.append(
            f"| {name} | {c['bytes_per_update']:,.0f} | {c['ratio']:.1f}x "
            f"| {c['final_accuracy']:.4f} | {reach} |"
        )
    return "\n".join(rows)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, c in results["compressors"].items():
        style = "--" if "no EF" in name else "-"
        ax.plot(c["cumulative_bytes_up"], c["accuracy"], style, marker=".", label=name)
    ax.set_xscale("log")
    ax.axhline(results["setting"]["target_accuracy"], color="grey", lw=0.8, ls=":")
    s = results["setting"]
    ax.set(
        xlabel="cumulative upload bytes (all clients)",
        ylabel="test accuracy (mean over seeds)",
        title=f"MNIST 2NN, {s['clients']} IID clients, C = {s['fraction']}, FedAvg: "
        "accuracy vs bytes sent",
        ylim=(0.8, 1.0),
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
