"""Personalization: one global model vs a model per client, on label-skewed MNIST.

MNIST (a random 12,000-example subset of the training set, for time), Dirichlet(alpha = 0.1)
label skew over 30 equal-sized clients (most hold one to four digits), a quarter of each
client's share held out for its own evaluation. A small MLP (784-64-10, 50,890 parameters;
its last layer ``3.*`` is the head), C = 0.5, E = 1, B = 20, lr 0.05, 20 rounds, 3 seeds
(each its own subset, partition, initial weights and sampling).

Methods (everything else equal):

- FedAvg's global model (McMahan et al. 2017), every client scored with it;
- FedAvg + local fine-tuning: each client takes ``FINETUNE_STEPS`` local SGD steps from the
  final global model on its own training split (``eval.finetune_steps``);
- FedPer (Arivazhagan et al. 2019): the head stays on each client, the body is averaged;
- FedRep (Collins et al. 2021): as FedPer, but each round a client trains its head alone for
  ``HEAD_EPOCHS`` epochs, then the body alone for one;
- Ditto (Li et al. 2021), lambda = ``DITTO_LAMBDA``: FedAvg plus a personal model per client
  trained one epoch a round with a proximal link to the global model.

Reported per method: each client's held-out accuracy with the global model and with its
personalized model (a client never sampled uses the global model), their mean and the mean of
the worst 10% of clients (:func:`fedloom.engine.evaluation.spread_metrics`), averaged over
seeds, and the global test accuracy. The claims are computed from these numbers and stored
with them.

Needs the MNIST IDX files (``$FEDLOOM_DATA/mnist`` or ``--data-root``). ``quick``: a
6,000-example subset, 20 clients, 10 rounds, one seed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedloom.algorithms import Algorithm, ditto, fedavg, fedper, fedrep
from fedloom.algorithms.personal import personalized_models, with_model
from fedloom.client import LocalTraining
from fedloom.data import Dataset, Dirichlet, FederatedDataset, federate, load_mnist
from fedloom.engine.evaluation import Evaluator, spread_metrics
from fedloom.sim import make_executor
from fedloom.simulation import finetuned_models, initial_module, simulate
from fedloom.studies._results import write_results

__all__ = ["METHODS", "claims", "mnist_mlp", "run", "table"]

ALPHA = 0.1
HEAD = "3.*"
FINETUNE_STEPS = 20
HEAD_EPOCHS = 2
DITTO_LAMBDA = 0.1
LOCAL = LocalTraining(epochs=1, batch_size=20, lr=0.05)
FRACTION = 0.5
METHODS = ("FedAvg", "FedAvg + fine-tuning", "FedPer", "FedRep", "Ditto")
PERSONALIZED = METHODS[1:]


def mnist_mlp(num_classes: int = 10) -> nn.Module:
    """784-64-10 with ReLU (50,890 parameters); ``3.*`` is the head."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))


def _algorithm(name: str) -> Algorithm:
    if name in ("FedAvg", "FedAvg + fine-tuning"):
        return fedavg()
    if name == "FedPer":
        return fedper([HEAD])
    if name == "FedRep":
        return fedrep([HEAD], head_epochs=HEAD_EPOCHS)
    return ditto(DITTO_LAMBDA, personal_epochs=1)


def _subset(dataset: Dataset, train: int, seed: int) -> Dataset:
    keep = torch.from_numpy(
        np.sort(np.random.default_rng(seed).permutation(len(dataset.train_y))[:train])
    )
    return dataclasses.replace(
        dataset, train_x=dataset.train_x[keep], train_y=dataset.train_y[keep]
    )


def _one(name: str, data: FederatedDataset, rounds: int, seed: int) -> dict[str, dict[str, Any]]:
    """One method, one seed: per-client accuracies of the global and the personalized model.
    FedAvg's run also gives FedAvg + fine-tuning (the same global model, fine-tuned)."""
    algorithm = _algorithm(name)
    tuning = FINETUNE_STEPS if name == "FedAvg" else 0
    history = simulate(
        algorithm, data, mnist_mlp, rounds=rounds, fraction=FRACTION, local=LOCAL, seed=seed,
        engine="vectorized", eval_every=rounds, eval_clients=True, finetune_steps=tuning,
    )  # fmt: skip
    state = history.final_state
    module = initial_module(mnist_mlp, seed=seed)
    evaluator = Evaluator(module, data)
    metrics = history.reports[-1].metrics
    global_scores = evaluator.client_scores(state.params, state.buffers).tolist()

    def entry(own: dict[int, torch.Tensor]) -> dict[str, Any]:
        personal = evaluator.client_scores(state.params, state.buffers, None, own)
        return {
            "global": global_scores,
            "personal": personal.tolist(),
            "test_accuracy": metrics["test_accuracy"],
            "num_personalized": len(own),
            "reported": {k: v for k, v in metrics.items() if k.startswith("client_")},
        }

    if name != "FedAvg":
        return {name: entry(personalized_models(with_model(algorithm, module), state))}
    tuner = make_executor(
        "vectorized", module, data, dataclasses.replace(LOCAL, steps=tuning)
    )  # the run's own fine-tuning: the same engine, settings and seeds, so the same models
    tuned = finetuned_models(tuner, data, state, {}, seed=seed)
    return {"FedAvg": entry({}), "FedAvg + fine-tuning": entry(tuned)}


def _spread(scores: list[float]) -> dict[str, float]:
    found = spread_metrics(np.asarray(scores), "acc")
    return {"mean": found["acc_mean"], "worst10": found["acc_worst10"]}


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in ("global", "personal"):
        spreads = [_spread(r[which]) for r in per_seed]
        out[which] = {
            "mean": round(float(np.mean([s["mean"] for s in spreads])), 4),
            "worst10": round(float(np.mean([s["worst10"] for s in spreads])), 4),
            "mean_per_seed": [round(s["mean"], 4) for s in spreads],
            "worst10_per_seed": [round(s["worst10"], 4) for s in spreads],
            "per_client_per_seed": [[round(a, 4) for a in r[which]] for r in per_seed],
        }
    out["test_accuracy"] = round(float(np.mean([r["test_accuracy"] for r in per_seed])), 4)
    out["num_personalized_per_seed"] = [r["num_personalized"] for r in per_seed]
    out["reported_per_seed"] = [
        {k: round(v, 4) for k, v in r["reported"].items()} for r in per_seed
    ]
    return out


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """What the numbers say about mean per-client accuracy (the issue's claim) and the worst
    10% of clients, against FedAvg's global model."""
    m = results["methods"]
    base = m["FedAvg"]["global"]
    found: dict[str, bool] = {}
    for name in PERSONALIZED:
        key = name.split(" ")[0].lower() + ("_finetuned" if "fine" in name else "")
        ours = m[name]["personal"]
        found[f"{key}_beats_global_mean"] = ours["mean"] > base["mean"]
        found[f"{key}_beats_global_mean_every_seed"] = all(
            a > b for a, b in zip(ours["mean_per_seed"], base["mean_per_seed"], strict=True)
        )
        found[f"{key}_beats_global_worst10"] = ours["worst10"] > base["worst10"]
    return found


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int = 20,
    seeds: tuple[int, ...] = (0, 1, 2),
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run every method for each seed; return (and write) per-client accuracies.

    Runs torch on one thread (restored after): a shared 2-core machine gains nothing from
    more for these small matrices."""
    train, num_clients = 12_000, 30
    if quick:
        train, num_clients, rounds, seeds = 6_000, 20, 10, (0,)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        full = load_mnist(data_root)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
        labels_per_client = []
        for seed in seeds:
            dataset = _subset(full, train, seed)
            data = federate(
                dataset, Dirichlet(num_clients, ALPHA), holdout_fraction=0.25, seed=seed
            )
            histograms = data.label_histograms()
            labels_per_client.append([int((h >= 0.05 * h.sum()).sum()) for h in histograms])
            for name in ("FedAvg", "FedPer", "FedRep", "Ditto"):
                for method, found in _one(name, data, rounds, seed).items():
                    runs[method].append(found)
    finally:
        torch.set_num_threads(threads)
    results: dict[str, Any] = {
        "setting": {
            "dataset": "mnist" + (" (quick subset)" if quick else ""),
            "train_examples": train,
            "clients": num_clients,
            "partition": f"dirichlet(alpha={ALPHA})",
            "holdout_fraction": 0.25,
            "labels_holding_5pct_per_client (first seed)": labels_per_client[0],
            "model": "mlp 784-64-10 (head: 3.*)",
            "rounds": rounds,
            "fraction": FRACTION,
            "seeds": list(seeds),
            "local": {"epochs": LOCAL.epochs, "batch_size": LOCAL.batch_size, "lr": LOCAL.lr},
            "finetune_steps": FINETUNE_STEPS,
            "fedrep_head_epochs": HEAD_EPOCHS,
            "ditto_lambda": DITTO_LAMBDA,
            "ditto_personal_epochs": 1,
        },
        "methods": {name: _summary(per_seed) for name, per_seed in runs.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    results["claims"] = claims(results)
    write_results(out_dir, "personalization", results)
    if out_dir is not None:
        _plot(results, out_dir / "personalization.png")
    return results


def table(results: dict[str, Any]) -> str:
    """The README table: per-client accuracy (mean, worst 10%) of the personalized and the
    global model, and the global test accuracy."""
    rows = [
        "| method | personalized: mean client | personalized: worst 10% "
        "| global model: mean client | global model: worst 10% | global test |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in results["methods"].items():
        p, g = v["personal"], v["global"]
        mine = ("-", "-") if name == "FedAvg" else (f"{p['mean']:.3f}", f"{p['worst10']:.3f}")
        rows.append(
            f"| {name} | {mine[0]} | {mine[1]} | {g['mean']:.3f} | {g['worst10']:.3f} "
            f"| {v['test_accuracy']:.3f} |"
        )
    return "\n".join(rows)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results["methods"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, v) in enumerate(methods.items()):
        which = "global" if name == "FedAvg" else "personal"
        label = f"{name} ({'global model' if which == 'global' else 'personalized'})"
        curves = [np.sort(c) for c in v[which]["per_client_per_seed"]]
        curve = np.mean(curves, axis=0)  # the k-th worst client, averaged over seeds
        x = np.linspace(0, 100, len(curve))
        ax.plot(x, curve, marker="o", ms=3, color=colors[i], label=label)
        tail = max(int(np.ceil(0.1 * len(curve))), 1)
        ax.plot(x[:tail], curve[:tail], "o", ms=8, mfc="none", color=colors[i])
    ax.axvspan(0, 100 * (max(int(np.ceil(0.1 * len(curve))), 1) - 1) / (len(curve) - 1) + 1.5,
               color="tab:red", alpha=0.08, label="worst 10% of clients")  # fmt: skip
    s = results["setting"]
    ax.set(
        xlabel="clients, sorted by held-out accuracy (percentile)",
        ylabel="held-out accuracy (sorted, mean over seeds)",
        title=f"Personalization on MNIST, Dirichlet({ALPHA}) over {s['clients']} clients, "
        f"{s['rounds']} rounds",
        ylim=(0, 1.02),
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
