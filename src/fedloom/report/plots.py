"""PNG plots of a run: the task's score (accuracy) and loss per round, and its per-client
spread."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_run"]


def _pyplot() -> Any:
    """matplotlib's pyplot with the file-only Agg backend, imported on first plot.

    Imported here rather than at the top so that ``import fedloom`` (and every run with
    ``output.plots: false``) does not pay for matplotlib.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _series(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in records if r.get(key) is not None]
    return [r["round"] for r in rows], [r[key] for r in rows]


def plot_run(
    records: Sequence[dict], out_dir: Path, *, title: str = "", score: str = "accuracy"
) -> list[Path]:
    """Write ``<score>.png``, and when measured ``client_<score>.png`` (``accuracy.png`` and
    ``client_accuracy.png`` for classification), ``privacy.png`` (epsilon per round of
    a DP run) and ``<score>_sim_time.png`` (the score against simulated time, for a run on
    the virtual clock); return their paths."""
    plt = _pyplot()
    written = []
    client = f"client_{score}"
    label = score.replace("_", " ")
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    acc_ax.plot(*_series(records, f"test_{score}"), marker=".", label="global test")
    if any(f"{client}_mean" in r for r in records):
        acc_ax.plot(*_series(records, f"{client}_mean"), marker=".", label="client mean")
    acc_ax.set(xlabel="round", ylabel=label, title=label)
    acc_ax.legend()
    acc_ax.grid(alpha=0.3)
    loss_ax.plot(*_series(records, "test_loss"), marker=".", label="global test")
    loss_ax.plot(*_series(records, "train_loss"), marker=".", label="client training")
    loss_ax.set(xlabel="round", ylabel="task loss", title="loss")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    written.append(out_dir / f"{score}.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    if any(f"{client}_mean" in r for r in records):
        rounds, mean = _series(records, f"{client}_mean")
        _, worst = _series(records, f"{client}_worst10")
        _, best = _series(records, f"{client}_best10")
        _, std = _series(records, f"{client}_std")
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.fill_between(rounds, worst, best, alpha=0.2, label="worst 10% .. best 10%")
        ax.fill_between(
            rounds,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            alpha=0.3,
            label="mean ± std",
        )
        ax.plot(rounds, mean, marker=".", label="mean")
        if any(f"{client}_smallest10" in r for r in records):
            ax.plot(
                *_series(records, f"{client}_smallest10"),
                linestyle="--",
                label="smallest 10% of clients",
            )
        ax.set(
            xlabel="round",
            ylabel=f"held-out {label}",
            title=f"per-client {label} spread",
        )
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / f"{client}.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    if any("dp_epsilon" in r for r in records):  # a differentially private run
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(*_series(records, "dp_epsilon"), marker=".")
        ax.set(xlabel="round", ylabel="epsilon", title="privacy spent (client-level epsilon)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / "privacy.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    timed = [r for r in records if "sim_time_s" in r and r.get(f"test_{score}") is not None]
    if timed:  # a run on the virtual clock (fedloom.engine.clock): the score in simulated time
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["sim_time_s"] for r in timed], [r[f"test_{score}"] for r in timed], marker=".")
        ax.set(xlabel="simulated time (s)", ylabel=label, title=f"{label} in simulated time")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / f"{score}_sim_time.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
