"""Objective inconsistency (Wang et al. 2020): unequal local work moves FedAvg's fixed point.

Four clients with quadratic objectives ``F_k(w) = 1/2 ||w - b_k||^2`` in two dimensions do
different numbers of local gradient steps every round (1, 5, 10 and 40: fast and slow
devices). The global objective ``(1/4) sum_k F_k`` has its optimum at the mean of the
``b_k``. FedAvg weights client ``k`` by roughly its step count, so it converges to a
different point, however many rounds it runs. FedNova divides each update by its work and
converges to the optimum (up to ``O(lr * tau)``, which vanishes as the learning rate does).
Everything runs through the real round loop and server update, on exact local gradient
descent (:class:`fedloom.sim.QuadraticExecutor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedloom.algorithms import Algorithm, fedavg, fednova
from fedloom.client import LocalTraining
from fedloom.engine import run_rounds
from fedloom.sim import QuadraticExecutor
from fedloom.studies._results import ParamsTrace, rounded, write_results

__all__ = ["CENTERS", "CLIENT_STEPS", "run"]

CENTERS = torch.tensor([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
CLIENT_STEPS = (1, 5, 10, 40)


def _trace(algorithm: Algorithm, rounds: int, lr: float) -> tuple[torch.Tensor, float]:
    settings = LocalTraining(lr=lr, steps=1)
    executor = QuadraticExecutor(
        torch.ones_like(CENTERS),
        CENTERS,
        [1] * len(CENTERS),
        settings,
        program=algorithm.client_program(),
        client_steps=CLIENT_STEPS,
    )
    trace = ParamsTrace()
    run_rounds(
        algorithm,
        executor,
        num_clients=len(CENTERS),
        params=torch.tensor([-2.0, 6.0]),
        buffers=torch.zeros(0),
        rounds=rounds,
        fraction=1.0,
        settings=settings,
        callbacks=[trace],
    )
    path = torch.stack(trace.params)
    optimum = executor.optimum(torch.ones(len(CENTERS)))
    return path, float((path[-1].double() - optimum).norm())


def run(out_dir: Path | None = None, *, quick: bool = False, lr: float = 0.002) -> dict[str, Any]:
    """Run FedAvg and FedNova; return (and write) their distances to the optimum."""
    rounds = 150 if quick else 400
    results: dict[str, Any] = {
        "setting": {"centers": CENTERS.tolist(), "client_steps": CLIENT_STEPS, "lr": lr},
        "rounds": rounds,
        "optimum": CENTERS.mean(0).tolist(),
    }
    paths = {}
    for name, algorithm in (("fedavg", fedavg(weighting="uniform")), ("fednova", fednova())):
        path, distance = _trace(algorithm, rounds, lr)
        paths[name] = path
        results[name] = {"final": rounded(path[-1].tolist()), "distance_to_optimum": distance}
    write_results(out_dir, "inconsistency", results)
    if out_dir is not None:
        _plot(paths, out_dir / "inconsistency.png")
    return results


def _plot(paths: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for k, (center, steps) in enumerate(zip(CENTERS.tolist(), CLIENT_STEPS, strict=True)):
        ax.scatter([center[0]], [center[1]], marker="s", color="grey")
        ax.annotate(f"client {k}: {steps} steps", center, textcoords="offset points", xytext=(4, 4))
    optimum_x, optimum_y = CENTERS.mean(0).tolist()
    ax.scatter([optimum_x], [optimum_y], marker="*", s=200, color="black", label="optimum")
    for name, trajectory in paths.items():
        ax.plot(trajectory[:, 0], trajectory[:, 1], marker=".", markersize=2, label=name)
    ax.set(title="global model per round", xlabel="w[0]", ylabel="w[1]", xlim=(-2.5, 6.5))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
