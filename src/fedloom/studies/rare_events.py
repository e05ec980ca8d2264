"""Rare events: cross-entropy vs class-weighted cross-entropy vs focal loss on a rare class.

MNIST, the 2NN, digit 8 made rare: 2% of the partitioned training data (the other digits
whole, IID over 30 clients; the kept 8s spread over clients by Dir(0.3), so a few clients
hold most of them and many none, :class:`fedloom.data.RareClass`). The global test set keeps
every other digit and enough 8s for the same 2% prevalence, so precision and PR-AUC are
measured at the prevalence the model trains at. FedAvg, C = 0.2, E = 1, B = 50, lr 0.05,
30 rounds, 3 seeds (each its own partition, initial weights and client sampling).

Variants (the task's loss; everything else equal):

- cross-entropy;
- class-weighted cross-entropy, "balanced" weights ``n / (C n_c)`` from the training split
  (about 5 for the rare 8, about 1 for the others; the mean weight per example is 1, so the
  learning rate means the same);
- focal loss, gamma = 2 and no alpha (:func:`fedloom.tasks.focal`);
- focal loss, gamma = 2, alpha = 0.25 (the paper's setting; with one rare class against the
  rest, alpha = 0.25 weights the rare class 0.25 and the others 0.75).

Reported for the rare class on the test set: recall, precision, F1 (argmax prediction) and
PR-AUC (average precision of its softmax score, :func:`fedloom.tasks.with_class_metrics`), as
the mean of the last 5 rounds' evaluations (the rare class's recall swings from round to
round with whether its few holders were sampled) and of the seeds, and test accuracy. The
claims are computed from these numbers and stored with them.

Needs the MNIST IDX files (``$FEDLOOM_DATA/mnist`` or ``--data-root``). ``quick``: a 12,000
example subset of the training set, 20 clients, 15 rounds, one seed, a 3,000 example test
subset.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.algorithms import fedavg
from fedloom.client import LocalTraining
from fedloom.data import Dataset, FederatedDataset, RareClass, federate, load_mnist
from fedloom.models import mnist_2nn
from fedloom.simulation import simulate
from fedloom.studies._results import write_results
from fedloom.tasks import Task, classification, focal
from fedloom.tasks import balanced_weights as class_balanced_weights

__all__ = ["METRICS", "RARE", "balanced_weights", "run", "table", "variants"]

RARE = 8
PREVALENCE = 0.02
SPREAD_ALPHA = 0.3
METRICS = ("recall", "precision", "f1", "pr_auc")
LAST = 5  # rounds averaged for the reported numbers


def balanced_weights(data: FederatedDataset) -> tuple[float, ...]:
    """``n / (C n_c)`` over the clients' training splits (sklearn's "balanced"; what
    ``task.class_weights: balanced`` gives from a config)."""
    return class_balanced_weights(data.label_histograms().sum(0))


def variants(data: FederatedDataset, bins: int = 200) -> dict[str, Task]:
    """The four tasks compared, each reporting the rare class's metrics."""
    shown = (RARE,)
    return {
        "cross-entropy": classification(class_metrics=shown, pr_bins=bins),
        "weighted CE (balanced)": classification(
            class_weights=balanced_weights(data), class_metrics=shown, pr_bins=bins
        ),
        "focal g=2": focal(
            gamma=2.0, alpha=None, positive_class=RARE, class_metrics=shown, pr_bins=bins
        ),  # fmt: skip
        "focal g=2 a=0.25": focal(
            gamma=2.0, alpha=0.25, positive_class=RARE, class_metrics=shown, pr_bins=bins
        ),  # fmt: skip
    }


def _subset(dataset: Dataset, *, train: int | None, test: int | None, seed: int) -> Dataset:
    """A random subset of the training and test sets, and the test set's rare class cut to
    the study's prevalence."""
    rng = np.random.default_rng(seed)
    train_x, train_y = dataset.train_x, dataset.train_y
    if train is not None:
        keep = torch.from_numpy(np.sort(rng.permutation(len(train_y))[:train]))
        train_x, train_y = train_x[keep], train_y[keep]
    test_y = dataset.test_y.numpy()
    order = rng.permutation(len(test_y))[: test or len(test_y)]
    rare = order[test_y[order] == RARE]
    rest = order[test_y[order] != RARE]
    num_rare = int(round(PREVALENCE * len(rest) / (1 - PREVALENCE)))
    index = torch.from_numpy(np.sort(np.concatenate([rest, rare[:num_rare]])))
    return dataclasses.replace(
        dataset,
        train_x=train_x,
        train_y=train_y,
        test_x=dataset.test_x[index],
        test_y=dataset.test_y[index],
    )


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int = 30,
    seeds: tuple[int, ...] = (0, 1, 2),
    names: tuple[str, ...] | None = None,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run the variants (all by default) for each seed; return (and write) the rare class's
    metrics. Each seed draws its own data subset, partition, initial weights and sampling.

    Runs torch on one thread (restored after): the 2NN's small matrices gain nothing from
    more, and on a shared 2-core machine extra threads made each step 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out_dir, quick=quick, rounds=rounds, seeds=seeds, names=names,
                    data_root=data_root)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def _federation(full: Dataset, *, quick: bool, seed: int) -> FederatedDataset:
    if quick:
        dataset, num_clients = _subset(full, train=12_000, test=3_000, seed=seed), 20
    else:
        dataset, num_clients = _subset(full, train=None, test=None, seed=seed), 30
    partitioner = RareClass(num_clients, rare_class=RARE, prevalence=PREVALENCE, alpha=SPREAD_ALPHA)
    return federate(dataset, partitioner, holdout_fraction=0.0, seed=seed)


def _run(
    out_dir: Path | None,
    *,
    quick: bool,
    rounds: int,
    seeds: tuple[int, ...],
    names: tuple[str, ...] | None,
    data_root: str | None,
) -> dict[str, Any]:
    full = load_mnist(data_root)
    if quick:
        rounds, seeds = min(rounds, 15), seeds[:1]
    local = LocalTraining(epochs=1, batch_size=50, lr=0.05)
    first = _federation(full, quick=quick, seed=seeds[0])
    rare_per_client = first.label_histograms()[:, RARE]
    results: dict[str, Any] = {
        "setting": {
            "dataset": "mnist" + (" (quick subset)" if quick else ""),
            "rare_class": RARE,
            "prevalence": PREVALENCE,
            "clients": first.num_clients,
            "spread_alpha": SPREAD_ALPHA,
            "train_examples": int(first.client_sizes.sum()),
            "train_rare": int(rare_per_client.sum()),
            "rare_per_client (first seed)": rare_per_client.tolist(),
            "clients_without_rare": int(np.sum(rare_per_client == 0)),
            "test_examples": len(first.dataset.test_y),
            "test_rare": int((first.dataset.test_y == RARE).sum()),
            "rounds": rounds,
            "fraction": 0.2,
            "local": dataclasses.asdict(local),
            "seeds": list(seeds),
            "averaged_rounds": LAST,
            "balanced_weights (first seed)": [round(w, 4) for w in balanced_weights(first)],
        },
        "variants": {},
    }
    started = time.perf_counter()
    runs: dict[str, list[dict[str, list[float]]]] = {}
    for seed in seeds:
        data = first if seed == seeds[0] else _federation(full, quick=quick, seed=seed)
        tasks = variants(data)
        for name in names or tuple(tasks):
            history = simulate(
                fedavg(), data, mnist_2nn, rounds=rounds, fraction=0.2, local=local,
                task=tasks[name], seed=seed, eval_clients=False,
            )  # fmt: skip
            per_round = {m: history.metric(f"test_{m}_{RARE}") for m in METRICS}
            per_round["accuracy"] = history.metric("test_accuracy")
            runs.setdefault(name, []).append(per_round)
    for name, per_seed in runs.items():
        finals = [{m: _mean(v[-LAST:]) for m, v in r.items()} for r in per_seed]
        keys = finals[0].keys()
        results["variants"][name] = {
            "final": {m: _json(_mean([f[m] for f in finals])) for m in keys},
            "final_std_over_seeds": {m: _json(float(np.std([f[m] for f in finals]))) for m in keys},
            "final_per_seed": [{m: _json(f[m]) for m in keys} for f in finals],
            "per_round_mean_over_seeds": {
                m: [_json(_mean(column)) for column in zip(*(r[m] for r in per_seed), strict=True)]
                for m in keys
            },
        }
    results["claims"] = claims(results)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    write_results(out_dir, "rare-events", results)
    if out_dir is not None:
        plot(results, out_dir / "rare-events.png")
    return results


def _mean(values: Any) -> float:
    """The mean of the defined (non-NaN) values; NaN when there are none (a precision of a
    class never predicted), without NumPy's empty-slice warning."""
    defined = [float(v) for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def _json(value: float) -> float | None:
    """Rounded, and ``None`` (JSON null) for NaN."""
    return None if np.isnan(value) else round(float(value), 4)


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """What the numbers say, as booleans (a variant that did not run gives no claim)."""
    final = {
        name: {m: _number(x) for m, x in v["final"].items()}
        for name, v in results["variants"].items()
    }
    base = final.get("cross-entropy")
    if base is None:
        return {}
    out = {}
    for name, numbers in final.items():
        if name == "cross-entropy":
            continue
        out[f"{name} raises recall over cross-entropy"] = numbers["recall"] > base["recall"]
        out[f"{name} raises F1 over cross-entropy"] = numbers["f1"] > base["f1"]
        out[f"{name} keeps PR-AUC within 0.05 of cross-entropy"] = bool(
            abs(numbers["pr_auc"] - base["pr_auc"]) <= 0.05
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """Bars of the rare class's final metrics per variant, and its recall per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["variants"])
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        final = results["variants"][name]["final"]
        x = np.arange(len(METRICS)) + (i - (len(names) - 1) / 2) * width
        drawn = bars.bar(x, [_number(final[m]) for m in METRICS], width, label=name)
        bars.bar_label(drawn, fmt="%.2f", fontsize=6)
        recall = [
            _number(r) for r in results["variants"][name]["per_round_mean_over_seeds"]["recall"]
        ]
        lines.plot(range(1, len(recall) + 1), recall, label=name)
    setting = results["setting"]
    bars.set_xticks(range(len(METRICS)), ["recall", "precision", "F1", "PR-AUC"])
    bars.set_ylim(0, 1.05)
    bars.set_title(
        f"digit {setting['rare_class']} at {setting['prevalence']:.0%}: mean of the last "
        f"{setting['averaged_rounds']} rounds and {len(setting['seeds'])} seed(s)"
    )
    lines.legend(fontsize=8, loc="upper left")
    lines.set_xlabel("round")
    lines.set_ylabel(f"test recall of digit {setting['rare_class']} (mean over seeds)")
    lines.set_ylim(0, 1.0)
    lines.set_title(
        f"{setting['clients']} clients ({setting['clients_without_rare']} without the rare "
        f"class, first seed), {len(setting['seeds'])} seed(s)"
    )
    lines.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> Any:
    """The rare class's metrics per variant as a rich table."""
    from rich.table import Table

    rare = results["setting"]["rare_class"]
    out = Table(
        title=f"rare class (digit {rare}) on the test set: mean of the last rounds and the seeds"
    )
    out.add_column("loss")
    for column in (*METRICS, "accuracy"):
        out.add_column(column, justify="right")
    for name, variant in results["variants"].items():
        final = variant["final"]
        cells = [
            f"{final[m]:.3f}" if final[m] is not None else "n/a" for m in (*METRICS, "accuracy")
        ]
        out.add_row(name, *cells)
    return out
