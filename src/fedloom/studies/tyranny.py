"""The tyranny of the majority: example weighting serves large clients, not small ones.

Four clients on the real ``digits`` data, with very unequal sizes and different label mixes:
two large clients hold digits 0-6 (600 and 400 examples), two small ones hold digits 7-8
(40 examples) and 8-9 (24 examples); a quarter of each is held out. Every round all four
train the same amount (C = 1, 10 local steps of B = 10, lr = 0.05), so only the weighting
differs. Each client's accuracy is measured on its own held-out examples.

With FedAvg's example weighting the small clients carry 6% of the weight: the model learns
digits 0-6 and the small clients stay at 0. Uniform weighting gives each client a quarter.
q-FFL weights by ``p_k F_k^q``: clients with a high loss count more, but its step size
``1 / sum_k p_k h_k`` also shrinks as ``q`` grows. The study reports each client's accuracy
per round, and the spread (std and worst client) at the end.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.algorithms import Algorithm, fedavg, qffl
from fedloom.client import LocalTraining
from fedloom.data import FederatedDataset, federate, load_digits
from fedloom.engine import Callback, Evaluator
from fedloom.models import digits_mlp
from fedloom.rng import numpy_rng
from fedloom.simulation import initial_module, simulate
from fedloom.studies._results import rounded, write_results
from fedloom.types import RoundReport

__all__ = ["CLIENTS", "run"]

# (labels, number of examples) per client
CLIENTS = (((0, 1, 2, 3, 4, 5, 6), 600), ((0, 1, 2, 3, 4, 5, 6), 400), ((7, 8), 40), ((8, 9), 24))


def tyranny_data(seed: int = 0) -> FederatedDataset:
    """The four clients of the study (disjoint examples, 25% of each held out)."""
    dataset = load_digits()
    labels = dataset.train_y.numpy()
    rng = numpy_rng(seed, "tyranny")
    free = np.ones(len(labels), dtype=bool)
    parts = []
    for wanted, size in CLIENTS:
        pool = np.flatnonzero(free & np.isin(labels, wanted))
        chosen = rng.choice(pool, size=size, replace=False)
        free[chosen] = False
        parts.append(np.sort(chosen))
    used = np.concatenate(parts)
    subset = replace(
        dataset,
        name="digits-tyranny",
        train_x=dataset.train_x[torch.from_numpy(used)],
        train_y=dataset.train_y[torch.from_numpy(used)],
    )
    bounds = np.cumsum([0, *(len(p) for p in parts)])
    local_parts = [np.arange(bounds[k], bounds[k + 1]) for k in range(len(parts))]
    return federate(subset, local_parts, holdout_fraction=0.25, seed=seed)


class ClientAccuracies(Callback):
    """Each client's held-out accuracy after every round."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.rows: list[list[float]] = []

    def on_round(self, report: RoundReport, state: Any) -> None:
        accuracies = self.evaluator.client_scores(state.params, state.buffers)
        self.rows.append([float(a) for a in accuracies])


def run(out_dir: Path | None = None, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run example weighting, uniform weighting and q-FFL; return (and write) the spreads."""
    rounds = 40 if quick else 100
    data = tyranny_data(seed)
    local = LocalTraining(steps=10, batch_size=10, lr=0.05)
    variants: dict[str, Algorithm] = {
        "FedAvg (example weights)": fedavg(),
        "FedAvg (uniform weights)": fedavg(weighting="uniform"),
        "q-FFL (q = 1)": qffl(1.0),
        "q-FFL (q = 5)": qffl(5.0),
    }
    curves: dict[str, list[list[float]]] = {}
    summary: dict[str, dict[str, Any]] = {}
    for label, algorithm in variants.items():
        module = initial_module(digits_mlp, seed=seed)
        tracker = ClientAccuracies(Evaluator(module, data))
        history = simulate(
            algorithm,
            data,
            module,
            rounds=rounds,
            fraction=1.0,
            local=local,
            seed=seed,
            engine="sequential",
            eval_clients=False,
            callbacks=[tracker],
        )
        curves[label] = tracker.rows
        final = np.array(tracker.rows[-1])
        summary[label] = {
            "client_accuracy": rounded(final.tolist(), 4),
            "std": float(final.std()),
            "worst": float(final.min()),
            "mean": float(final.mean()),
            "test_accuracy": history.reports[-1].metrics["test_accuracy"],
        }
    results = {
        "rounds": rounds,
        "clients": [
            {"labels": list(lab), "train": int(len(t)), "holdout": int(len(h))}
            for (lab, _), t, h in zip(CLIENTS, data.client_train, data.client_holdout, strict=True)
        ],
        "summary": summary,
        "client_accuracy_per_round": curves,
    }
    write_results(out_dir, "tyranny", results)
    if out_dir is not None:
        _plot(curves, data, out_dir / "tyranny.png")
    return results


def _plot(curves: dict[str, list[list[float]]], data: FederatedDataset, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharey=True)
    for ax, (label, rows) in zip(axes.flat, curves.items(), strict=True):
        table = torch.tensor(rows)
        for k, ((labels, _), train) in enumerate(zip(CLIENTS, data.client_train, strict=True)):
            name = f"client {k}: {len(train)} ex, digits {labels[0]}-{labels[-1]}"
            ax.plot(range(1, len(rows) + 1), table[:, k], label=name)
        ax.set(title=label, xlabel="round", ylabel="held-out accuracy", ylim=(0, 1.02))
    axes.flat[0].legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
