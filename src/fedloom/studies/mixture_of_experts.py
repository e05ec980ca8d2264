"""Federated mixture of experts vs one global model vs local models, on clustered digits.

Data: sklearn digits (8x8), split IID over ``NUM_CLIENTS`` clients, a quarter of each
client's share held out for its own evaluation; client ``k`` belongs to cluster ``k mod 4``
and sees the labels through its cluster's fixed permutation (cluster 0: the identity;
:func:`fedloom.data.apply_clusters`, ``kind="permute_labels"``): the same image means a
different digit in each cluster, so no single model fits two clusters. (``kind="rotate"``,
images rotated by 0/90/180/270 degrees, is the other option; one MLP fits all four
rotations of digits about as well as a mixture, so it does not separate the methods.)
C = 0.5, E = 5, B = 10, lr 0.1, ``ROUNDS`` rounds, 3 seeds (each its own partition,
permutations, initial weights and sampling).

Methods (everything else equal):

- **MoE, personal gate**: 4 experts (MLP 64-32-10 each) averaged by FedAvg and a linear
  gate per client (``gate.*`` personal, FedPer's mechanism; :mod:`fedloom.tasks.moe`);
- **MoE, shared gate**: the same model, gate averaged too (it must route by the input);
- **FedAvg, global MLP**: one global model of the same size (64-128-10, 9,610 parameters
  against the mixture's 9,640 for the experts);
- **local MLPs**: the same MLP, every parameter personal (each client trains only on its own
  data when sampled, nothing is shared).

Reported: each client's held-out accuracy with its model (a client's personal parts where
it has them), mean and worst client per method, averaged over seeds; and for the personal
gate (and the shared one), the mean gate weight per expert for each cluster's held-out
examples, per seed (the routing heatmap shows the first seed: expert numbers are arbitrary,
so routings are not averaged over seeds). ``quick``: 8 clients, 15 rounds, one seed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedloom.algorithms import Algorithm, fedavg, fedper
from fedloom.algorithms.personal import personalized_models, with_model, with_personal
from fedloom.client import LocalTraining
from fedloom.data import IID, FederatedDataset, apply_clusters, cluster_ids, federate, load_digits
from fedloom.engine.evaluation import Evaluator
from fedloom.params import load_flat
from fedloom.simulation import initial_module, simulate
from fedloom.studies._results import write_results
from fedloom.tasks.moe import MixtureOfExperts, MoEModel

__all__ = ["METHODS", "claims", "run", "table"]

NUM_CLUSTERS = 4
NUM_CLIENTS = 16
ROUNDS = 40
FRACTION = 0.5
LOCAL = LocalTraining(epochs=5, batch_size=10, lr=0.1)
MOE = MixtureOfExperts(num_experts=4, expert_hidden=(32,), gate_hidden=0, gate="personal")
METHODS = ("MoE, personal gate", "MoE, shared gate", "FedAvg, global MLP", "local MLPs")


def mlp(num_classes: int = 10) -> nn.Module:
    """64-128-10 with ReLU (9,610 parameters), the size of the mixture's experts together."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, num_classes))


def _moe() -> nn.Module:
    return MOE.model(64, 10)


def _method(name: str) -> tuple[Algorithm, Any]:
    if name == "MoE, personal gate":
        return with_personal(fedavg(), MOE.personal_patterns, field="gate"), _moe
    if name == "MoE, shared gate":
        return fedavg(), _moe
    if name == "FedAvg, global MLP":
        return fedavg(), mlp
    return fedper(["*"]), mlp


def _one(name: str, data: FederatedDataset, rounds: int, seed: int) -> dict[str, Any]:
    """One method, one seed: per-client held-out accuracy; routing for a personal gate."""
    algorithm, model = _method(name)
    history = simulate(
        algorithm, data, model, rounds=rounds, fraction=FRACTION, local=LOCAL, seed=seed,
        engine="vectorized", eval_every=rounds, eval_clients=False,
    )  # fmt: skip
    state = history.final_state
    module = initial_module(model, seed=seed)
    own = personalized_models(with_model(algorithm, module), state)
    scores = Evaluator(module, data).client_scores(state.params, state.buffers, None, own)
    found: dict[str, Any] = {"clients": scores.tolist(), "num_personalized": len(own)}
    if isinstance(module, MoEModel):
        found["routing"] = _routing(module, data, state.params, own)
    return found


def _routing(
    module: MoEModel, data: FederatedDataset, params: torch.Tensor, own: dict[int, torch.Tensor]
) -> list[list[float]]:
    """``[clusters, experts]`` mean gate weight over each cluster's held-out examples, each
    client's examples through its own gate."""
    clusters = cluster_ids(data.num_clients, NUM_CLUSTERS)
    sums = np.zeros((NUM_CLUSTERS, len(module.experts)))
    counts = np.zeros(NUM_CLUSTERS)
    with torch.no_grad():
        for k in range(data.num_clients):
            load_flat(module, own.get(k, params))
            rows = torch.from_numpy(data.client_holdout[k])
            weights = module.gate_weights(data.dataset.train_x[rows])
            sums[clusters[k]] += weights.sum(0).numpy()
            counts[clusters[k]] += len(rows)
    return (sums / counts[:, None]).round(4).tolist()


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """Whether the personal-gate mixture beats the global model and the local models on
    mean and worst client accuracy, and whether its gates route the clusters apart (each
    cluster's most used expert differs, in every seed)."""
    m = results["methods"]
    moe = m["MoE, personal gate"]
    found = {}
    for key, other in (("global", "FedAvg, global MLP"), ("local", "local MLPs")):
        found[f"moe_beats_{key}_mean"] = moe["mean"] > m[other]["mean"]
        found[f"moe_beats_{key}_worst"] = moe["worst"] > m[other]["worst"]
        found[f"moe_beats_{key}_mean_every_seed"] = all(
            a > b for a, b in zip(moe["mean_per_seed"], m[other]["mean_per_seed"], strict=True)
        )
    found["clusters_use_distinct_top_experts"] = all(
        len(set(np.asarray(r).argmax(1).tolist())) == len(r)
        for r in results["routing_personal_gate_per_seed"]
    )
    return found


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int = ROUNDS,
    seeds: tuple[int, ...] = (0, 1, 2),
    num_clients: int = NUM_CLIENTS,
    kind: str = "permute_labels",
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run every method for each seed; return (and write) the numbers and the heatmap.

    ``data_root`` is accepted for ``fedloom study --data-root`` and unused: digits ship with
    scikit-learn."""
    if quick:
        num_clients, rounds, seeds = 8, 15, (0,)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in METHODS}
    try:
        digits = load_digits()
        for seed in seeds:
            data = federate(digits, IID(num_clients), holdout_fraction=0.25, seed=seed)
            data = apply_clusters(data, kind=kind, num_clusters=NUM_CLUSTERS, seed=seed)
            for name in METHODS:
                runs[name].append(_one(name, data, rounds, seed))
    finally:
        torch.set_num_threads(threads)
    methods = {}
    for name, per_seed in runs.items():
        means = [float(np.nanmean(r["clients"])) for r in per_seed]
        worsts = [float(np.nanmin(r["clients"])) for r in per_seed]
        methods[name] = {
            "mean": round(float(np.mean(means)), 4),
            "worst": round(float(np.mean(worsts)), 4),
            "mean_per_seed": [round(v, 4) for v in means],
            "worst_per_seed": [round(v, 4) for v in worsts],
            "per_client_per_seed": [[round(a, 4) for a in r["clients"]] for r in per_seed],
        }
    # routing of the first seed: expert numbers mean nothing across seeds (any permutation
    # of the experts is the same model), so routings are shown per seed, not averaged
    personal = [r["routing"] for r in runs["MoE, personal gate"]]
    shared = [r["routing"] for r in runs["MoE, shared gate"]]
    results: dict[str, Any] = {
        "setting": {
            "dataset": f"digits, clustered: {kind}",
            "clusters": NUM_CLUSTERS,
            "clients": num_clients,
            "partition": "iid, then client k in cluster k mod 4",
            "mix": MOE.mix,
            "holdout_fraction": 0.25,
            "experts": MOE.num_experts,
            "expert": "mlp 64-32-10",
            "gate": "linear 64-4, softmax",
            "global_model": "mlp 64-128-10",
            "rounds": rounds,
            "fraction": FRACTION,
            "seeds": list(seeds),
            "local": {"epochs": LOCAL.epochs, "batch_size": LOCAL.batch_size, "lr": LOCAL.lr},
        },
        "methods": methods,
        "routing_personal_gate": personal[0],
        "routing_shared_gate": shared[0],
        "routing_personal_gate_per_seed": personal,
        "routing_shared_gate_per_seed": shared,
        "seconds": round(time.perf_counter() - start, 1),
    }
    results["claims"] = claims(results)
    write_results(out_dir, "mixture-of-experts", results)
    if out_dir is not None:
        _plot(results, out_dir / "mixture_of_experts.png")
    return results


def table(results: dict[str, Any]) -> str:
    """The README table: per-client held-out accuracy (mean, worst client) per method."""
    rows = ["| method | mean client | worst client |", "|---|---|---|"]
    for name, v in results["methods"].items():
        rows.append(f"| {name} | {v['mean']:.3f} | {v['worst']:.3f} |")
    return "\n".join(rows)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for ax, key, title in (
        (axes[0], "routing_personal_gate", "personal gate"),
        (axes[1], "routing_shared_gate", "shared gate"),
    ):
        grid = np.asarray(results[key])
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                    color="white" if value < 0.6 else "black", fontsize=8)  # fmt: skip
        ax.set(
            title=f"{title} (seed {results['setting']['seeds'][0]})",
            xlabel="expert",
            ylabel="cluster",
            xticks=range(grid.shape[1]),
            yticks=range(grid.shape[0]),
            yticklabels=[str(c) for c in range(grid.shape[0])],
        )
    fig.colorbar(image, ax=axes[:2], shrink=0.8)
    names = list(results["methods"])
    means = [results["methods"][n]["mean"] for n in names]
    worsts = [results["methods"][n]["worst"] for n in names]
    x = np.arange(len(names))
    axes[2].bar(x - 0.2, means, 0.4, label="mean client")
    axes[2].bar(x + 0.2, worsts, 0.4, label="worst client")
    axes[2].set(xticks=x, ylim=(0, 1), ylabel="held-out accuracy", title="per-client accuracy")
    axes[2].set_xticklabels([n.replace(", ", ",\n") for n in names], fontsize=8)
    axes[2].legend(loc="lower right", fontsize=8)
    s = results["setting"]
    fig.suptitle(
        "mean gate weight per expert on each cluster's held-out examples; "
        f"mixture of experts on clustered digits ({s['dataset'].split(': ')[1]}): {s['clients']} clients, {s['clusters']} "
        f"clusters, {s['rounds']} rounds, {len(s['seeds'])} seed(s)"
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
