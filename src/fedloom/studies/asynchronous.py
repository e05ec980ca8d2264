"""Synchronous FedAvg vs asynchronous FedBuff on a long-tailed population, in simulated time.

Nguyen et al. 2022 ("Federated Learning with Buffered Asynchronous Aggregation") motivate
FedBuff by stragglers: a synchronous round lasts as long as its slowest client, and with
device speeds spread over an order of magnitude the slowest of a cohort is several times the
median. FedBuff never waits: ``concurrency`` clients train at once and the server steps every
K arrivals, down-weighting stale updates by ``1 / sqrt(1 + s)``.

Setting (full): MNIST, 100 IID clients (600 examples each), the 2NN, E = 1, B = 10,
lr = 0.05, on the virtual clock (:mod:`fedloom.engine.clock`): speeds log-normal with median
100 examples/s and sigma 1 (the 90th percentile is 13x the 10th), download 1 MB/s and upload
250 kB/s medians (sigma 0.5), the 2NN's 797 kB each way. Curves:

- FedAvg, 10 clients a round, waiting for the slowest;
- FedAvg with a deadline of twice the median client's job time (the slower clients of a
  round are dropped as stragglers);
- FedBuff, K = 10, concurrency 20, staleness weight ``1 / sqrt(1 + s)``, server lr 1.

Synchronous FedAvg (waiting) runs until it reaches the target accuracy (97% full; quick:
digits, 20 clients, 85%) or ``rounds`` rounds; the other two run for the same simulated time.
The study reports test accuracy against simulated time and the simulated time each takes to
reach the target.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from fedloom.algorithms import fedavg
from fedloom.client import LocalTraining
from fedloom.data import federate, load_digits, load_mnist
from fedloom.data.partitioners import IID
from fedloom.engine import Callback, FedBuff, LogNormal, VirtualClock, draw_profiles
from fedloom.engine.clock import client_timing
from fedloom.models import digits_mlp, initial_module, mnist_2nn
from fedloom.simulation import simulate
from fedloom.simulation_async import simulate_fedbuff
from fedloom.studies._results import rounded, write_results
from fedloom.types import RoundReport

__all__ = ["CURVES", "claims", "run"]

WAIT, DEADLINE, BUFFERED = CURVES = (
    "FedAvg (waits for the slowest)",
    "FedAvg (deadline, stragglers dropped)",
    "FedBuff (staleness 1/sqrt(1+s))",
)


class StopAtAccuracy(Callback):
    """Stops a run at the first report whose test accuracy reaches ``target``."""

    def __init__(self, target: float):
        self.target = target

    def on_round(self, report: RoundReport, state: Any) -> None:
        if report.metrics.get("test_accuracy", 0.0) >= self.target:
            self.stop_requested = True


class StopAtTime(Callback):
    """Stops a run once its simulated time reaches ``limit_s``."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s

    def on_round(self, report: RoundReport, state: Any) -> None:
        if report.metrics.get("sim_time_s", 0.0) >= self.limit_s:
            self.stop_requested = True


def time_to(target: float, times: list[float], accuracy: list[float]) -> float | None:
    """The first simulated time at which ``accuracy`` reaches ``target`` (``None``: never)."""
    return next((t for t, a in zip(times, accuracy, strict=True) if a >= target), None)


def claims(results: dict[str, Any]) -> dict[str, bool]:
    """What the README says, as booleans computed from the numbers."""
    reach = {name: c["time_to_target_s"] for name, c in results["curves"].items()}
    wait, buffered, deadline = reach[WAIT], reach[BUFFERED], reach[DEADLINE]
    found = {
        "fedbuff_reaches_the_target": buffered is not None,
        "fedbuff_reaches_it_before_fedavg_waiting": buffered is not None
        and (wait is None or buffered < wait),
        "fedbuff_reaches_it_before_fedavg_with_a_deadline": buffered is not None
        and (deadline is None or buffered < deadline),
    }
    return {name: bool(value) for name, value in found.items()}


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    rounds: int | None = None,
    seed: int = 0,
    data_root: str | None = None,
) -> dict[str, Any]:
    """Run the three curves; return (and write) accuracy against simulated time."""
    if quick:
        dataset, model, num_clients, target = load_digits(), digits_mlp, 20, 0.85
        rounds = rounds or 25
    else:
        dataset, model, num_clients, target = load_mnist(data_root), mnist_2nn, 100, 0.97
        rounds = rounds or 80
    data = federate(dataset, IID(num_clients), holdout_fraction=0.0, seed=seed)
    local = LocalTraining(epochs=1, batch_size=10, lr=0.05)
    cohort, buffer_size, concurrency = 10, 10, 20
    if quick:
        cohort, buffer_size, concurrency = 5, 5, 10
    profiles = draw_profiles(
        num_clients,
        speed=LogNormal(100.0, 1.0),
        down_bps=LogNormal(1e6, 0.5),
        up_bps=LogNormal(2.5e5, 0.5),
        seed=seed,
    )
    num_values = sum(p.numel() for p in initial_module(model, seed=seed).parameters())
    size = 4.0 * num_values
    jobs = [
        client_timing(p, client_id=k, start_s=0.0, examples=n, down_bytes=size, up_bytes=size)
        for k, (p, n) in enumerate(zip(profiles, data.client_sizes, strict=True))
    ]
    median_job_s = statistics.median(j.finish_s for j in jobs)
    deadline_s = 2.0 * median_job_s
    curves: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    wait = simulate(
        fedavg(), data, model, rounds=rounds, fraction=cohort / num_clients,
        clock=VirtualClock(profiles), engine="sequential", eval_clients=False,
        callbacks=[StopAtAccuracy(target)], local=local, seed=seed,
    )  # fmt: skip
    curves[WAIT] = _curve(wait.reports, target, started)
    limit_s = curves[WAIT]["sim_time_s"][-1]
    started = time.perf_counter()
    quiet = logging.getLogger("fedloom")  # every deadline miss is a logged failure: expected here
    level, quiet.level = quiet.level, logging.ERROR
    try:
        cut = simulate(
            fedavg(), data, model, rounds=100 * rounds, fraction=cohort / num_clients,
            clock=VirtualClock(profiles, deadline_s=deadline_s), engine="sequential",
            eval_clients=False, callbacks=[StopAtTime(limit_s)], local=local, seed=seed,
        )  # fmt: skip
    finally:
        quiet.level = level
    curves[DEADLINE] = _curve(cut.reports, target, started)
    started = time.perf_counter()
    buffered = simulate_fedbuff(
        fedavg(weighting="uniform"), data, model, clock=VirtualClock(profiles),
        fedbuff=FedBuff(buffer_size=buffer_size, concurrency=concurrency),
        steps=100 * rounds, callbacks=[StopAtTime(limit_s)], local=local, seed=seed,
    )  # fmt: skip
    curves[BUFFERED] = _curve(buffered.reports, target, started)
    curves[BUFFERED]["staleness_mean"] = round(
        statistics.fmean(buffered.metric("staleness_mean")), 3
    )
    results = {
        "setting": {
            "dataset": "digits" if quick else "mnist",
            "model": "digits_mlp" if quick else "mnist_2nn",
            "num_clients": num_clients,
            "client_sizes": sorted({int(n) for n in data.client_sizes}),
            "local": {"epochs": 1, "batch_size": 10, "lr": 0.05},
            "cohort": cohort,
            "buffer_size": buffer_size,
            "concurrency": concurrency,
            "staleness": "1/sqrt(1+s)",
            "speed": "log-normal, median 100 examples/s, sigma 1",
            "down_bps": "log-normal, median 1e6, sigma 0.5",
            "up_bps": "log-normal, median 2.5e5, sigma 0.5",
            "model_bytes": size,
            "median_job_s": round(median_job_s, 3),
            "slowest_job_s": round(max(j.finish_s for j in jobs), 3),
            "deadline_s": round(deadline_s, 3),
            "sync_rounds": rounds,
            "seed": seed,
        },
        "target": target,
        "curves": curves,
    }
    results["claims"] = claims(results)
    write_results(out_dir, "async", results)
    if out_dir is not None:
        _plot(results, out_dir / "async.png")
    return results


def _curve(reports: tuple[RoundReport, ...], target: float, started: float) -> dict[str, Any]:
    times = [float(r.metrics["sim_time_s"]) for r in reports]
    accuracy = [float(r.metrics["test_accuracy"]) for r in reports]
    return {
        "sim_time_s": rounded(times),
        "test_accuracy": rounded(accuracy),
        "updates": len(reports),
        "final_accuracy": round(accuracy[-1], 4),
        "best_accuracy": round(max(accuracy), 4),
        "time_to_target_s": _round(time_to(target, times, accuracy)),
        "deadline_misses": int(sum(r.metrics.get("num_deadline_misses", 0.0) for r in reports)),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curve in results["curves"].items():
        reach = curve["time_to_target_s"]
        label = f"{name}: target at {reach:.0f} s" if reach is not None else f"{name}: no target"
        ax.plot(curve["sim_time_s"], curve["test_accuracy"], label=label)
    target = results["target"]
    ax.axhline(target, color="grey", lw=0.8, ls=":")
    setting = results["setting"]
    ax.set(
        title=f"{setting['dataset']}, {setting['num_clients']} clients, log-normal speeds (sigma 1)",
        xlabel="simulated time (s)",
        ylabel="test accuracy",
        ylim=(max(0.0, target - 0.25), 1.0),
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
