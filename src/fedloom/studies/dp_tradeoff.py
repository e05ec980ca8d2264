"""Accuracy vs epsilon for DP-FedAvg: MNIST, the 2NN, 1,000 clients.

MNIST split IID over 1,000 clients (60 training examples each), the 2NN (199,210
parameters), DP-FedAvg (McMahan et al. 2018) with uniform fixed-size sampling of M = 50
clients per round (the round loop's sampling), 100 rounds, one local epoch (B = 10, client
lr 0.1), clip norm S = 0.5 (below the median update norm, which is 0.5-0.7 in a pilot) and
server learning rate 0.5, for three noise multipliers and none (``z = 0``: the same clipping
and fixed denominator, no noise, epsilon infinite). All four runs share the seed, hence the
cohorts and the initial model. Each run reports its final global test accuracy and the
``dp_epsilon`` fedloom reports for it at ``delta = 1e-5`` (below ``1 / N = 1e-3``): the RDP
accountant for uniform sampling under replace-one, as the noise stage computes it (with the
noise multiplier halved: a replacement may move the sum by ``2 S``, which ``fedloom study
dp-audit``'s canary vs anti-canary game measures).

Expected shape: more noise buys a smaller epsilon and costs accuracy. With only 1,000
clients the price is high: the noise on the averaged update is ``z S / M`` per coordinate
and the cohort ``M`` is bounded by the population (for a fixed epsilon the noise-to-signal
ratio falls roughly as ``1 / N``). With the server learning rate 1 instead of 0.5 a pilot
reached 0.76 (z = 2) and 0.29 (z = 4) instead of 0.87 and 0.59: a smaller step keeps the
accumulated noise lower.

``quick``: the bundled digits (1,437 training images of 8x8) on 50 IID clients with the
digits MLP (4,810 parameters), 10 per round, 12 rounds of two local epochs (lr 0.3), S = 1,
server lr 1: the same code in seconds, with a curve of the same shape.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedloom.client import LocalTraining
from fedloom.data import IID, FederatedDataset, cohort_size, federate, load_digits, load_mnist
from fedloom.models import digits_mlp, mnist_2nn
from fedloom.privacy.dp_fedavg import dp_fedavg
from fedloom.simulation import simulate
from fedloom.studies._results import json_safe, rounded, write_results

__all__ = ["FULL", "QUICK", "TradeoffSetting", "run", "table"]


@dataclass(frozen=True)
class TradeoffSetting:
    """One trade-off curve: the federation, DP-FedAvg's settings and the noise multipliers."""

    clients: int = 1_000
    fraction: float = 0.05
    rounds: int = 100
    clip_norm: float = 0.5
    server_lr: float = 0.5
    local: LocalTraining = field(
        default_factory=lambda: LocalTraining(epochs=1, batch_size=10, lr=0.1)
    )
    noise_multipliers: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    delta: float = 1e-5
    eval_every: int = 10


FULL = TradeoffSetting()
QUICK = TradeoffSetting(
    clients=50,
    fraction=0.2,
    rounds=12,
    local=LocalTraining(epochs=2, batch_size=10, lr=0.3),
    clip_norm=1.0,
    server_lr=1.0,
    eval_every=4,
)


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    setting: TradeoffSetting | None = None,
    engine: str = "vectorized",
    data_root: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train once per noise multiplier; return (and write) accuracy and epsilon per run."""
    setting = setting or (QUICK if quick else FULL)
    if quick:
        dataset, model = load_digits(), digits_mlp
    else:
        dataset, model = load_mnist(data_root), mnist_2nn
    data: FederatedDataset = federate(
        dataset, IID(setting.clients), holdout_fraction=0.0, seed=seed
    )
    cohort = cohort_size(data.num_clients, setting.fraction)
    started = time.perf_counter()
    rows = []
    for z in setting.noise_multipliers:
        run_started = time.perf_counter()
        history = simulate(
            dp_fedavg(setting.clip_norm, z, setting.delta, server_lr=setting.server_lr),
            data,
            model,
            rounds=setting.rounds,
            fraction=setting.fraction,
            local=setting.local,
            engine=engine,
            seed=seed,
            eval_every=setting.eval_every,
            eval_clients=False,
        )
        evaluated = [r for r in history.reports if "test_accuracy" in r.metrics]
        rows.append(
            {
                "noise_multiplier": z,
                "epsilon": history.reports[-1].metrics["dp_epsilon"],
                "test_accuracy": evaluated[-1].metrics["test_accuracy"],
                "eval_rounds": [r.round for r in evaluated],
                "accuracy_per_eval": rounded([r.metrics["test_accuracy"] for r in evaluated], 4),
                "noise_std_on_average": z * setting.clip_norm / cohort,
                "wall_s": time.perf_counter() - run_started,
            }
        )
    results = {
        "setting": {
            **asdict(setting),
            "dataset": data.dataset.name,
            "model": model.__name__,
            "partition": f"IID over {data.num_clients} clients",
            "clients_per_round": cohort,
            "sampling": "uniform fixed-size (the round loop's)",
            "accountant": "fedloom's dp_epsilon: RDP, uniform sampling, replace-one",
            "engine": engine,
            "seed": seed,
        },
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    write_results(out_dir, "dp_tradeoff", json_safe(results))
    if out_dir is not None:
        _plot(results, out_dir / "dp_tradeoff.png")
    return results


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    private = [r for r in rows if math.isfinite(r["epsilon"])]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot([r["epsilon"] for r in private], [r["test_accuracy"] for r in private], "o-",
              color="#4c72b0", label="epsilon as fedloom reports it")  # fmt: skip
    for r in private:
        left.annotate(f"z={r['noise_multiplier']:g}", (r["epsilon"], r["test_accuracy"]),
                      textcoords="offset points", xytext=(4, -10), fontsize=8)  # fmt: skip
    for r in rows:
        if not math.isfinite(r["epsilon"]):
            left.axhline(r["test_accuracy"], color="grey", ls=":",
                         label=f"no noise (z = 0): {r['test_accuracy']:.3f}")  # fmt: skip
    lowest = min(r["test_accuracy"] for r in rows)
    left.set_ylim(max(lowest - 0.05, 0.0), None)
    left.set_xscale("log")
    left.set_xlabel(f"epsilon at delta = {results['setting']['delta']:g} (log scale)")
    left.set_ylabel("final test accuracy")
    left.set_title("accuracy vs epsilon")
    left.legend(fontsize=8, loc="lower right")
    for r in rows:
        right.plot(r["eval_rounds"], r["accuracy_per_eval"], marker=".",
                   label=f"z = {r['noise_multiplier']:g}")  # fmt: skip
    right.set_xlabel("round")
    right.set_ylabel("test accuracy")
    right.set_title("test accuracy per round")
    right.legend(fontsize=8)
    s = results["setting"]
    fig.suptitle(
        f"DP-FedAvg, {s['dataset']} {s['model']}, {s['partition']}, "
        f"{s['clients_per_round']} per round, {s['rounds']} rounds, S = {s['clip_norm']:g}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> Any:
    """Accuracy and epsilon per noise multiplier, as a rich table."""
    from rich.table import Table

    out = Table(title=f"DP-FedAvg: accuracy vs epsilon (delta {results['setting']['delta']:g})")
    for column in ("z", "epsilon (fedloom)", "test accuracy", "wall s"):
        out.add_column(column, justify="right")
    for row in results["rows"]:
        out.add_row(
            f"{row['noise_multiplier']:g}",
            f"{row['epsilon']:.3f}",
            f"{row['test_accuracy']:.4f}",
            f"{row['wall_s']:.0f}",
        )
    return out
