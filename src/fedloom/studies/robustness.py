"""Which aggregator survives which attack: the robustness grid.

MNIST, 2NN, 100 clients with IID data, 20 rounds, 20 clients per round (C = 0.2), one local
epoch (B = 50, lr = 0.1). For every aggregator x attack x attacker fraction (10%, 20%, 40% of
the population) the final global test accuracy is recorded; ``none`` is the clean baseline.
The defender configures each rule for the attacker share it expects: Krum's ``f`` and the
trimmed mean's ``beta`` follow the fraction (``f = round(fraction * m)``, capped so that
``m > 2f + 2``).

Expected shape: the mean collapses under scaling even at 10%; the robust rules stay near the
clean accuracy at 10-20%.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fedloom.aggregate import (
    CenteredClipping,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    Mean,
    Reducer,
    TrimmedMean,
)
from fedloom.algorithms import fedavg
from fedloom.client import LocalTraining
from fedloom.data import IID, FederatedDataset, federate, load_digits, load_mnist
from fedloom.models import digits_mlp, mnist_2nn
from fedloom.sim.attacks import Attack
from fedloom.simulation import simulate
from fedloom.studies._results import write_results

__all__ = ["AGGREGATORS", "ATTACKS", "FRACTIONS", "rule_for", "run"]

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum", "geometric_median", "centered_clipping")
ATTACKS = {
    "none": Attack(),
    "scaling x100": Attack("scaling", factor=100.0),
    "sign flip": Attack("sign_flip"),
    "ALIE": Attack("alie"),
    "label flip": Attack("label_flip"),
}
FRACTIONS = (0.1, 0.2, 0.4)
CC_TAU = 1.0


def rule_for(name: str, fraction: float, cohort: int) -> Reducer:
    """The aggregator ``name`` configured for an expected attacker ``fraction``."""
    f = min(round(fraction * cohort), max((cohort - 3) // 2, 0))
    if name == "median":
        return CoordinateMedian()
    if name == "trimmed_mean":
        return TrimmedMean(beta=min(max(fraction, 0.1), 0.45))
    if name == "krum":
        return Krum(f=max(f, 1))
    if name == "geometric_median":
        return GeometricMedian()
    if name == "centered_clipping":
        return CenteredClipping(tau=CC_TAU, iterations=3)
    return Mean()


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int = 20,
    aggregators: tuple[str, ...] = AGGREGATORS,
    attacks: tuple[str, ...] = tuple(ATTACKS),
    fractions: tuple[float, ...] = FRACTIONS,
    data_root: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the grid; return (and write) the accuracy table."""
    if quick:  # the bundled digits, 20 clients: runs anywhere in a minute
        data: FederatedDataset = federate(load_digits(), IID(20), holdout_fraction=0.0, seed=seed)
        model, fraction_per_round, local = digits_mlp, 0.5, LocalTraining(epochs=2, lr=0.1)
        rounds = min(rounds, 8)
    else:
        data = federate(load_mnist(data_root), IID(100), holdout_fraction=0.0, seed=seed)
        model, fraction_per_round = mnist_2nn, 0.2
        local = LocalTraining(epochs=1, batch_size=50, lr=0.1)
    cohort = max(round(fraction_per_round * data.num_clients), 1)
    table: dict[str, dict[str, float]] = {name: {} for name in aggregators}
    started = time.perf_counter()
    for name in aggregators:
        for attack_name in attacks:
            for fraction in fractions if attack_name != "none" else (0.0,):
                attack = replace(ATTACKS[attack_name], fraction=fraction)
                rule = rule_for(name, fraction if attack_name != "none" else 0.1, cohort)
                history = simulate(
                    fedavg().with_aggregator(rule),
                    data,
                    model,
                    rounds=rounds,
                    fraction=fraction_per_round,
                    local=local,
                    attack=attack,
                    seed=seed,
                    eval_clients=False,
                    eval_every=rounds,
                )
                accuracy = history.reports[-1].metrics["test_accuracy"]
                column = "none" if attack_name == "none" else f"{attack_name} @{fraction:.0%}"
                table[name][column] = round(accuracy if math.isfinite(accuracy) else 0.0, 4)
    results = {
        "setting": {
            "dataset": data.dataset.name,
            "clients": data.num_clients,
            "clients_per_round": cohort,
            "rounds": rounds,
            "local": asdict(local),
            "centered_clipping_tau": CC_TAU,
        },
        "test_accuracy": table,
        "wall_s": time.perf_counter() - started,
    }
    write_results(out_dir, "robustness", results)
    if out_dir is not None:
        _heatmap(table, out_dir / "robustness.png")
    return results


def _heatmap(table: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(table)
    columns = list(next(iter(table.values())))
    values = np.array([[table[r].get(c, np.nan) for c in columns] for r in rows])
    fig, ax = plt.subplots(figsize=(1.0 * len(columns) + 2, 0.6 * len(rows) + 1.5))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, label="final test accuracy")
    ax.set_title("aggregator x attack (attacker share of the population)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> Any:
    """The accuracy grid as a rich table (aggregators as rows)."""
    from rich.table import Table

    grid = results["test_accuracy"]
    columns = list(next(iter(grid.values())))
    out = Table(title="final test accuracy: aggregator x attack @ attacker share")
    out.add_column("aggregator")
    for column in columns:
        out.add_column(column, justify="right")
    for name, row in grid.items():
        out.add_row(name, *(f"{row[c]:.3f}" for c in columns))
    return out
