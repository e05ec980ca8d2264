"""Scanner skew: FedAvg plain vs instance norm vs FedBN when each client has its own "scanner".

MNIST (the first 6,000 training rows, 600 per client, for time) or digits (scikit-learn's
8x8 handwriting), IID labels over 10 clients, a quarter of each client's share held out, and each client's
rows seen through its own scanner (:mod:`fedloom.data.scanners`, ``strength`` 1: the five
kinds brightness, contrast, gamma, blur and noise, two clients each). All 10 clients every
round, E = 1, B = 10, lr 0.05, 20 rounds, 3 seeds (each its own split, scanners, initial
weights and batches). Committed results: MNIST in ``benchmarks/results/studies/scanner-skew/
mnist/``; digits (``dataset="digits"``, 30 rounds) in ``.../scanner-skew/``.

Variants (the model and the algorithm; everything else equal; the models are
``mnist_small_cnn`` with ``norm`` None, ``"instance"``, ``"batch"`` on MNIST and
``digits_cnn``, ``digits_cnn_in``, ``digits_cnn_bn`` on digits):

- FedAvg, no normalization;
- FedAvg, instance norm after the convolution (averaged like any weight);
- FedBN, batch norm layers (their weights and statistics stay on each client);
- and, as references, each variant on the same split without scanners: normalization layers
  also speed up training, so part of any gain is not about the scanners.

Reported: each client's held-out accuracy after the last round (its rows carry its scanner;
FedBN's clients evaluate with their own batch-norm layers), the mean and the worst client,
averaged over seeds, and the clean global test accuracy (for FedBN: the global model with
the server's untouched batch-norm layers, which no client trains; not comparable).

The full study runs on MNIST; ``quick`` on digits, one seed, 15 rounds. Per-client scores
come from the :class:`~fedloom.engine.ClientScores` callback.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.algorithms import fedavg, fedbn
from fedloom.client import LocalTraining
from fedloom.data import IID, Dataset, FederatedDataset, federate, load_digits, load_mnist
from fedloom.data.scanners import SCANNER_KINDS, apply_scanners, draw_scanners
from fedloom.engine import ClientScores
from fedloom.models import ModelSource, digits_cnn, digits_cnn_bn, digits_cnn_in, mnist_small_cnn
from fedloom.simulation import simulate
from fedloom.studies._results import write_results

__all__ = ["MODELS", "VARIANTS", "claims", "run", "skewed", "skewed_digits", "table"]

NUM_CLIENTS = 10
STRENGTH = 1.0
VARIANTS = ("FedAvg", "FedAvg + instance norm", "FedBN")
MNIST_ROWS = 6000
MODELS: dict[str, dict[str, ModelSource]] = {
    "mnist": {
        "FedAvg": mnist_small_cnn,
        "FedAvg + instance norm": partial(mnist_small_cnn, norm="instance"),
        "FedBN": partial(mnist_small_cnn, norm="batch"),
    },
    "digits": {
        "FedAvg": digits_cnn,
        "FedAvg + instance norm": digits_cnn_in,
        "FedBN": digits_cnn_bn,
    },
}


def skewed_digits(seed: int, *, scanned: bool = True) -> FederatedDataset:
    """Digits over 10 IID clients, each seen through its own scanner (unless not
    ``scanned``: the same split, clean)."""
    return skewed(load_digits(), seed, scanned=scanned)


def skewed(dataset: Dataset, seed: int, *, scanned: bool = True) -> FederatedDataset:
    """``dataset`` over 10 IID clients, each seen through its own scanner (unless not
    ``scanned``: the same split, clean)."""
    data = federate(dataset, IID(num_clients=NUM_CLIENTS), holdout_fraction=0.25, seed=seed)
    if not scanned:
        return data
    scanners = draw_scanners(NUM_CLIENTS, SCANNER_KINDS, STRENGTH, seed=seed)
    return apply_scanners(data, scanners, seed=seed)


def _one(name: str, data: FederatedDataset, rounds: int, seed: int, dataset: str) -> dict[str, Any]:
    local = LocalTraining(epochs=1, batch_size=10, lr=0.05)
    algorithm, buffers = {
        "FedAvg": (fedavg(), "average"),
        "FedAvg + instance norm": (fedavg(), "average"),
        "FedBN": (fedbn(), "local"),
    }[name]
    model = MODELS[dataset][name]
    scores = ClientScores()
    history = simulate(
        algorithm,
        data,
        model,
        rounds=rounds,
        fraction=1.0,
        local=local,
        seed=seed,
        buffers=buffers,  # type: ignore[arg-type]
        engine="sequential",
        callbacks=[scores],
    )
    per_client = scores.last["client_personal" if name == "FedBN" else "client"].tolist()
    return {
        "per_client": per_client,
        "mean": float(np.mean(per_client)),
        "worst": float(np.min(per_client)),
        "worst_client": int(np.argmin(per_client)),
        "test_accuracy": history.metric("test_accuracy")[-1],
    }


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """What the numbers say: does instance norm or FedBN raise the worst client (and the
    mean) over plain FedAvg, and do the scanners cost them less?"""
    v = results["variants"]
    plain = v["FedAvg"]

    def cost(name: str) -> float:
        return float(results["no_scanners"][name]["worst"] - v[name]["worst"])

    return {
        "instance_norm_raises_worst": v["FedAvg + instance norm"]["worst"] > plain["worst"],
        "fedbn_raises_worst": v["FedBN"]["worst"] > plain["worst"],
        "instance_norm_raises_mean": v["FedAvg + instance norm"]["mean"] > plain["mean"],
        "fedbn_raises_mean": v["FedBN"]["mean"] > plain["mean"],
        # the scanners cost each variant's worst client (no scanners minus scanners): less
        # with instance norm or FedBN than with plain FedAvg
        "instance_norm_loses_less_to_scanners": cost("FedAvg + instance norm") < cost("FedAvg"),
        "fedbn_loses_less_to_scanners": cost("FedBN") < cost("FedAvg"),
    }


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int = 20,
    seeds: tuple[int, ...] = (0, 1, 2),
    dataset: str | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run the three variants for each seed; return (and write) per-client accuracies.

    ``dataset``: ``"mnist"`` (the first :data:`MNIST_ROWS` training rows; the default) or
    ``"digits"`` (the default with ``quick``)."""
    if quick:
        rounds, seeds = 15, (0,)
    dataset = dataset or ("digits" if quick else "mnist")
    if dataset not in MODELS:
        raise ValueError(f"dataset must be one of {', '.join(MODELS)}, got {dataset!r}")
    if dataset == "mnist":
        mnist = load_mnist(data_root)
        source = replace(
            mnist, train_x=mnist.train_x[:MNIST_ROWS], train_y=mnist.train_y[:MNIST_ROWS]
        )
    else:
        source = load_digits()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
        clean: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
        scanners: list[list[dict[str, Any]]] = []
        for seed in seeds:
            data = skewed(source, seed)
            drawn = draw_scanners(NUM_CLIENTS, SCANNER_KINDS, STRENGTH, seed=seed)
            scanners.append([{"kind": s.kind, "param": round(s.param, 4)} for s in drawn])
            for name in VARIANTS:
                runs[name].append(_one(name, data, rounds, seed, dataset))
            unscanned = skewed(source, seed, scanned=False)
            for name in VARIANTS:
                clean[name].append(_one(name, unscanned, rounds, seed, dataset))
    finally:
        torch.set_num_threads(threads)
    variants = {name: _summary(per_seed) for name, per_seed in runs.items()}
    results: dict[str, Any] = {
        "setting": {
            "dataset": dataset,
            "train_rows": source.num_train,
            "clients": NUM_CLIENTS,
            "partition": "iid",
            "holdout_fraction": 0.25,
            "scanner_kinds": list(SCANNER_KINDS),
            "strength": STRENGTH,
            "rounds": rounds,
            "seeds": list(seeds),
            "local": {"epochs": 1, "batch_size": 10, "lr": 0.05},
            "fraction": 1.0,
            "scanners_per_seed": scanners,
        },
        "variants": variants,
        "no_scanners": {name: _summary(per_seed) for name, per_seed in clean.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    results["claims"] = claims(results)
    write_results(out_dir, "scanner-skew", results)
    if out_dir is not None:
        _plot(results, out_dir / "scanner-skew.png")
    return results


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    per_client = np.mean([r["per_client"] for r in per_seed], axis=0)
    return {
        "per_client": [round(float(a), 4) for a in per_client],
        "mean": round(float(np.mean([r["mean"] for r in per_seed])), 4),
        "worst": round(float(np.mean([r["worst"] for r in per_seed])), 4),
        "worst_per_seed": [round(r["worst"], 4) for r in per_seed],
        "mean_per_seed": [round(r["mean"], 4) for r in per_seed],
        "test_accuracy": round(float(np.mean([r["test_accuracy"] for r in per_seed])), 4),
    }


def table(results: dict[str, Any]) -> str:
    """The README table: mean and worst client held-out accuracy, clean test accuracy."""
    rows = [
        "| variant | mean client | worst client | global test (clean) "
        "| no scanners: mean client | no scanners: worst client |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        c = results["no_scanners"][name]
        rows.append(
            f"| {name} | {v['mean']:.3f} | {v['worst']:.3f} | {v['test_accuracy']:.3f} "
            f"| {c['mean']:.3f} | {c['worst']:.3f} |"
        )
    return "\n".join(rows)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = results["variants"]
    kinds = [s["kind"] for s in results["setting"]["scanners_per_seed"][0]]
    fig, axes = plt.subplots(1, len(variants), figsize=(14, 4), sharey=True)
    for ax, (name, v) in zip(axes, variants.items(), strict=True):
        accs = v["per_client"]
        worst = int(np.argmin(accs))
        colors = ["tab:red" if k == worst else "tab:blue" for k in range(len(accs))]
        ax.bar(range(len(accs)), accs, color=colors)
        ax.set_xticks(range(len(accs)), [f"{k}\n{kinds[k][:4]}" for k in range(len(accs))])
        ax.set(
            title=f"{name}\nmean {v['mean']:.3f}, worst client (mean of seeds) {v['worst']:.3f}",
            xlabel="client (scanner kind)",
            ylim=(0, 1.02),
        )
    axes[0].set_ylabel("held-out accuracy (mean over seeds)")
    setting = results["setting"]
    fig.suptitle(
        f"Scanner skew, {setting['dataset']} ({setting.get('train_rows', '?')} training rows), "
        "10 clients: per-client accuracy (worst in red)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
