"""Lifelong learning: do EWC and a proximal term stop a federation forgetting earlier tasks?

Split MNIST (:mod:`fedloom.data.task_sequence`): the digit pairs 0/1, 2/3, 4/5, 6/7, 8/9 are
five tasks that every client's data goes through in order, 3 rounds each;
10 IID clients (each sees the current pair's rows of its share), all of them every round,
the 2NN, E = 2, B = 32, lr 0.1, FedAvg aggregation. Four local objectives (the only
difference between the variants):

- plain: the new task's cross-entropy (FedAvg);
- proximal: + ``mu / 2 ||w - w_t||^2`` to the broadcast global model (FedProx's term,
  ``mu = 0.1``);
- EWC: + ``lam / 2 sum_i F_i (w_i - w_old_i)^2`` (Kirkpatrick et al. 2017, ``lam = 1000``)
  with each client's own empirical diagonal Fisher, estimated on 100 of its examples at the
  end of each task and summed over tasks, anchored at the model the task ended with
  (:mod:`fedloom.client.ewc`; the Fisher and the anchor stay in the client-state store, the
  server never sees them). Each coordinate of the summed Fisher is capped at
  ``0.5 / (lr * lam)`` (:func:`~fedloom.client.ewc.accumulate_fisher`): without the cap plain
  SGD diverged on the penalty (``lam = 100`` by the third task, ``lr * lam * max F`` near 4),
  and a ``lam`` small enough to be stable without it (40 at lr 0.05) changed nothing, since
  the empirical Fisher of a well-fit task is tiny on all but a few weights. ``capped_share``
  in the results is the share of coordinates at the cap after the last task;
- EWC + proximal: both terms.

After each task the global model is scored on the test digits of every task. Two scores:
**task-incremental** (the model is told which pair a digit belongs to and picks the larger
of the pair's two logits; van de Ven & Tolias 2019's "Task-IL") and **class-incremental**
(arg max over all ten digits, "Class-IL"; with one shared softmax trained on one pair at a
time, every method here is expected to fail it). Forgetting of task ``i`` is its accuracy
right after it was learned minus its accuracy after the last task, averaged over the first
four tasks (Chaudhry et al. 2018 take the best earlier accuracy instead; the same here
except for noise).

This is the loop of :func:`fedloom.algorithms.server_update` and
:func:`fedloom.client.train_client` driven by the study itself (it predates the engine path,
and its committed numbers come from its own batch seeds). The engine now runs the same
training from a config (``data.task_sequence`` and ``algorithm: lifelong``,
``examples/mnist_lifelong_ewc.yaml``); ``tests/algorithms/test_lifelong_ewc.py`` shows that
the engine's run equals this loop exactly when both use the engine's plans.

The full run uses half of MNIST's training rows (the first 30,000) and three seeds;
``quick`` a tenth of them and one seed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.algorithms import fedavg, server_init, server_update
from fedloom.client import LocalTraining, ObjectiveTerm, ProximalTerm, make_objective, train_client
from fedloom.client.ewc import diagonal_fisher, ewc_context, ewc_writes
from fedloom.client.store import with_writes
from fedloom.client.terms import EWC_FISHER, EWCTerm
from fedloom.data import IID, FederatedDataset, federate, load_mnist
from fedloom.data.task_sequence import TaskSequence, label_groups, task_data, task_test_batch
from fedloom.models import initial_module, mnist_2nn
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.rng import derive_seed
from fedloom.studies._results import write_results
from fedloom.tasks import take
from fedloom.types import ClientPlan

__all__ = ["VARIANTS", "claims", "lifelong_run", "run", "table"]

NUM_CLIENTS = 10
MU = 0.1
LAM = 1000.0
FISHER_CAP = 0.5 / (0.1 * LAM)  # lr * lam * F_i <= 0.5: SGD stays stable on the penalty
LOCAL = LocalTraining(epochs=2, batch_size=32, lr=0.1)
VARIANTS: dict[str, tuple[ObjectiveTerm, ...]] = {
    "plain": (),
    "proximal": (ProximalTerm(MU),),
    "EWC": (EWCTerm(LAM),),
    "EWC + proximal": (EWCTerm(LAM), ProximalTerm(MU)),
}


def lifelong_run(
    data: FederatedDataset,
    sequence: TaskSequence,
    terms: tuple[ObjectiveTerm, ...],
    *,
    local: LocalTraining = LOCAL,
    fisher_examples: int = 100,
    fisher_cap: float | None = FISHER_CAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the 2NN through ``sequence`` with ``terms`` in every client's objective; return
    the accuracy matrices ``[after task t][on task i]`` (task- and class-incremental).

    Each client estimates its Fisher on the first ``fisher_examples`` rows of its task data
    (its rows in dataset order, which for MNIST is no particular order)."""
    module = initial_module(mnist_2nn, seed=seed)
    spec, bspec = param_spec(module), buffer_spec(module)
    objective = make_objective(module, spec, bspec, terms=terms)
    plain = make_objective(module, spec, bspec)
    uses_ewc = any(isinstance(t, EWCTerm) and t.lam > 0 for t in terms)
    algorithm = fedavg()
    state = server_init(algorithm, flatten_params(module), flatten_buffers(module))
    tests = [task_test_batch(data, labels) for labels in sequence.tasks]
    rounds = sequence.rounds_per_task or 1
    task_il, class_il = [], []
    for t in range(sequence.num_tasks):
        view = task_data(data, sequence, t)
        batches = [view.client_batch(k) for k in range(view.num_clients)]
        for r in range(rounds):
            number = t * rounds + r
            results = [
                train_client(
                    ClientPlan(k, number, derive_seed(seed, "lifelong", number, k)),
                    batches[k],
                    state.params,
                    state.buffers,
                    objective=objective,
                    settings=local,
                    context=ewc_context(state.clients, k, state.params),
                )
                for k in range(view.num_clients)
            ]
            state = server_update(
                algorithm, state, results, settings=local, num_clients=view.num_clients
            )
        if uses_ewc:  # each client's Fisher of the task at the model the task ended with
            writes = {
                k: ewc_writes(
                    state.clients.get(k, {}),
                    diagonal_fisher(
                        plain,
                        state.params,
                        state.buffers,
                        take(batches[k], slice(0, fisher_examples)),
                    ),
                    state.params,
                    max_value=fisher_cap,
                )
                for k in range(view.num_clients)
            }
            state = replace(state, clients=with_writes(state.clients, writes))
        scores = [_accuracies(module, spec, state.params, b, labels)
                  for b, labels in zip(tests, sequence.tasks, strict=True)]  # fmt: skip
        task_il.append([s[0] for s in scores])
        class_il.append([s[1] for s in scores])
    finite = bool(torch.isfinite(state.params).all())
    fishers = [own[EWC_FISHER] for own in state.clients.values() if EWC_FISHER in own]
    capped = (
        float(np.mean([float((f >= fisher_cap).double().mean()) for f in fishers]))
        if fishers and fisher_cap is not None
        else 0.0
    )
    return {"task_il": task_il, "class_il": class_il, "finite": finite, "capped_share": capped}


@torch.no_grad()
def _accuracies(
    module: torch.nn.Module, spec: Any, params: torch.Tensor, batch: dict, labels: tuple
) -> tuple[float, float]:
    """(task-incremental, class-incremental) accuracy of ``params`` on a task's test rows."""
    logits = torch.func.functional_call(module, spec.views(params), (batch["x"],))
    y = batch["y"]
    within = torch.tensor(labels)[logits[:, list(labels)].argmax(1)]
    return float((within == y).double().mean()), float((logits.argmax(1) == y).double().mean())


def forgetting(matrix: list[list[float]]) -> float:
    """Mean over the tasks before the last of (accuracy right after learning the task minus
    accuracy after the last task)."""
    last = len(matrix) - 1
    return float(np.mean([matrix[i][i] - matrix[last][i] for i in range(last)]))


def earlier_accuracy(matrix: list[list[float]]) -> list[float]:
    """After each task ``t >= 1``: the mean accuracy on the earlier tasks ``0..t-1``."""
    return [float(np.mean(matrix[t][:t])) for t in range(1, len(matrix))]


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """What the numbers say (task-incremental scores): does EWC forget less than plain
    training, alone and with the proximal term, does the proximal term alone, and is EWC +
    proximal the best of the four?"""
    f = {name: v["forgetting"] for name, v in results["variants"].items()}
    return {
        "ewc_forgets_less_than_plain": f["EWC"] < f["plain"],
        "ewc_prox_forgets_less_than_plain": f["EWC + proximal"] < f["plain"],
        "proximal_forgets_less_than_plain": f["proximal"] < f["plain"],
        "ewc_prox_forgets_least": f["EWC + proximal"] == min(f.values()),
    }


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds_per_task: int = 3,
    seeds: tuple[int, ...] = (0, 1, 2),
    share: float = 0.5,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run the four variants for each seed; return (and write) forgetting and accuracies.

    ``share``: the fraction of MNIST's training rows used (the first ones; half by default,
    for time: a 2-core machine shared by others)."""
    if quick:
        seeds, share = (0,), 0.1
    mnist = load_mnist(data_root)
    rows = int(mnist.num_train * share)
    mnist = replace(mnist, train_x=mnist.train_x[:rows], train_y=mnist.train_y[:rows])
    sequence = TaskSequence(label_groups(10), rounds_per_task=rounds_per_task)
    setting: dict[str, Any] = {
        "dataset": "mnist",
        "train_rows": rows,
        "tasks": [list(t) for t in sequence.tasks],
        "rounds_per_task": rounds_per_task,
        "clients": NUM_CLIENTS,
        "partition": "iid",
        "holdout_fraction": 0.1,
        "fraction": 1.0,
        "model": "mnist_2nn",
        "local": {"epochs": LOCAL.epochs, "batch_size": LOCAL.batch_size, "lr": LOCAL.lr},
        "mu": MU,
        "ewc_lambda": LAM,
        "fisher_cap": FISHER_CAP,
        "fisher": "empirical: mean of squared per-example gradients on 100 examples per "
        "client and task, summed over tasks",
        "seeds": [],
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    results: dict[str, Any] = {}
    try:
        for seed in seeds:
            data = federate(mnist, IID(NUM_CLIENTS), holdout_fraction=0.1, seed=seed)
            for name, terms in VARIANTS.items():
                per_seed[name].append(lifelong_run(data, sequence, terms, seed=seed))
            setting["seeds"] = [*setting["seeds"], seed]
            results = {
                "setting": setting,
                "variants": {name: _summary(runs) for name, runs in per_seed.items()},
                "seconds": round(time.perf_counter() - start, 1),
            }
            results["claims"] = claims(results)
            write_results(out_dir, "lifelong", results)  # after each seed: partial results
    finally:
        torch.set_num_threads(threads)
    if out_dir is not None:
        _plot(results, out_dir / "lifelong.png")
    return results


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> np.ndarray:
        return np.mean([r[key] for r in runs], axis=0)

    task_il, class_il = mean("task_il").tolist(), mean("class_il").tolist()
    return {
        "forgetting": round(float(np.mean([forgetting(r["task_il"]) for r in runs])), 4),
        "forgetting_per_seed": [round(forgetting(r["task_il"]), 4) for r in runs],
        "diverged_seeds": sum(not r["finite"] for r in runs),
        "capped_share": round(float(np.mean([r["capped_share"] for r in runs])), 6),
        "final_accuracy": round(float(np.mean(task_il[-1])), 4),
        "earlier_accuracy": [round(a, 4) for a in earlier_accuracy(task_il)],
        "task_il": [[round(a, 4) for a in row] for row in task_il],
        "class_il_forgetting": round(float(np.mean([forgetting(r["class_il"]) for r in runs])), 4),
        "class_il_final_accuracy": round(float(np.mean(class_il[-1])), 4),
        "class_il": [[round(a, 4) for a in row] for row in class_il],
    }


def table(results: dict[str, Any]) -> str:
    """The README table: forgetting and final accuracies per variant."""
    rows = [
        "| variant | forgetting (task-IL) | final mean accuracy (task-IL) "
        "| accuracy on earlier tasks after task 2..5 | final mean accuracy (class-IL) |",
        "|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        curve = ", ".join(f"{a:.3f}" for a in v["earlier_accuracy"])
        rows.append(
            f"| {name} | {v['forgetting']:.3f} | {v['final_accuracy']:.3f} | {curve} "
            f"| {v['class_il_final_accuracy']:.3f} |"
        )
    return "\n".join(rows)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = results["variants"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, v in variants.items():
        curve = v["earlier_accuracy"]
        left.plot(range(2, len(curve) + 2), curve, marker="o", label=name)
    left.set_xticks(range(2, len(curve) + 2))
    left.set(
        xlabel="tasks learned (digit pairs)",
        ylabel="mean accuracy on the earlier tasks (task-IL)",
        title="Accuracy on earlier tasks after each new task",
        ylim=(0.4, 1.01),
    )
    left.legend()
    names = list(variants)
    values = [variants[n]["forgetting"] for n in names]
    right.bar(names, values, color=["tab:blue", "tab:orange", "tab:green", "tab:red"])
    for i, value in enumerate(values):
        right.text(i, value, f"{value:.3f}", ha="center", va="bottom")
    right.set(ylabel="average forgetting (task-IL)", title="Forgetting after the last task")
    seeds = len(results["setting"]["seeds"])
    fig.suptitle(f"Split MNIST, 10 clients, FedAvg aggregation (mean of {seeds} seed(s))")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
