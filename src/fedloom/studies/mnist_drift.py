"""Rounds to 97% on pathological non-IID MNIST (McMahan et al. 2017, Table 2 setting).

100 clients with 2 label shards each (at most 2 digits per client), C = 0.1, the 2NN
(199,210 parameters), client lr 0.05. Each variant runs until the global test accuracy
reaches the target or the round budget ends; the study reports the first round at or above
the target (or that it was not reached, with the best accuracy seen).

Needs the MNIST IDX files (``$FEDLOOM_DATA/mnist`` or ``--data-root``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedloom.algorithms import Algorithm, fedadam, fedavg, fedprox, fedsgd, scaffold
from fedloom.client import LocalTraining
from fedloom.data import Shards, federate, load_mnist
from fedloom.engine import Callback
from fedloom.models import mnist_2nn
from fedloom.simulation import simulate
from fedloom.studies._results import write_results
from fedloom.types import RoundReport

__all__ = ["VARIANTS", "run"]

VARIANTS: dict[str, tuple[Algorithm, LocalTraining]] = {
    "FedAvg E=1 B=10": (fedavg(), LocalTraining(epochs=1, batch_size=10, lr=0.05)),
    "FedAvg E=5 B=10": (fedavg(), LocalTraining(epochs=5, batch_size=10, lr=0.05)),
    "FedProx mu=0.1 E=5 B=10": (fedprox(0.1), LocalTraining(epochs=5, batch_size=10, lr=0.05)),
    "SCAFFOLD E=5 B=10": (scaffold(), LocalTraining(epochs=5, batch_size=10, lr=0.05)),
    "FedAdam E=5 B=10": (
        fedadam(server_lr=0.01),
        LocalTraining(epochs=5, batch_size=10, lr=0.05),
    ),
    "FedSGD (E=1, B=full)": (fedsgd(), LocalTraining(lr=0.2)),
}


class StopAtTarget(Callback):
    """Stops the run at the first round whose test accuracy reaches ``target``."""

    def __init__(self, target: float):
        self.target = target
        self.reached: int | None = None
        self.best = 0.0

    def on_round(self, report: RoundReport, state: Any) -> None:
        accuracy = report.metrics.get("test_accuracy")
        if accuracy is None:
            return
        self.best = max(self.best, accuracy)
        if accuracy >= self.target and self.reached is None:
            self.reached = report.round
            self.stop_requested = True


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    target: float = 0.97,
    max_rounds: int = 1000,
    max_rounds_fedsgd: int = 5000,
    variants: list[str] | None = None,
    data_root: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the variants (all by default); return (and write) rounds to ``target``."""
    if quick:
        max_rounds, max_rounds_fedsgd = 5, 20
    data = federate(load_mnist(data_root), Shards(100, 2), holdout_fraction=0.0, seed=seed)
    results: dict[str, Any] = {"target": target, "seed": seed, "variants": {}}
    for name in variants or list(VARIANTS):
        algorithm, local = VARIANTS[name]
        budget = max_rounds_fedsgd if algorithm.name == "fedsgd" else max_rounds
        stop = StopAtTarget(target)
        started = time.perf_counter()
        history = simulate(
            algorithm,
            data,
            mnist_2nn,
            rounds=budget,
            fraction=0.1,
            local=local,
            seed=seed,
            eval_clients=False,
            callbacks=[stop],
        )
        results["variants"][name] = {
            "rounds_to_target": stop.reached,
            "rounds_run": len(history.reports),
            "budget": budget,
            "best_test_accuracy": stop.best,
            "accuracy_per_round": [round(a, 4) for a in history.metric("test_accuracy")],
            "wall_s": time.perf_counter() - started,
        }
        write_results(out_dir, "mnist_drift", results)  # after each variant: partial results
    return results
