"""PNG plots of a run: global accuracy and loss per round, and the per-client accuracy spread."""

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


def plot_run(records: Sequence[dict], out_dir: Path, *, title: str = "") -> list[Path]:
    """Write ``accuracy.png`` and (when measured) ``client_accuracy.png``; return their paths."""
    plt = _pyplot()
    written = []
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    acc_ax.plot(*_series(records, "test_accuracy"), marker=".", label="global test")
    if any("client_accuracy_mean" in r for r in records):
        acc_ax.plot(*_series(records, "client_accuracy_mean"), marker=".", label="client mean")
    acc_ax.set(xlabel="round", ylabel="accuracy", title="accuracy")
    acc_ax.legend()
    acc_ax.grid(alpha=0.3)
    loss_ax.plot(*_series(records, "test_loss"), marker=".", label="global test")
    loss_ax.plot(*_series(records, "train_loss"), marker=".", label="client training")
    loss_ax.set(xlabel="round", ylabel="cross-entropy", title="loss")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    written.append(out_dir / "accuracy.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    if any("client_accuracy_mean" in r for r in records):
        rounds, mean = _series(records, "client_accuracy_mean")
        _, worst = _series(records, "client_accuracy_worst10")
        _, best = _series(records, "client_accuracy_best10")
        _, std = _series(records, "client_accuracy_std")
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.fill_between(rounds, worst, best, alpha=0.2, label="worst 10% .. best 10%")
        ax.fill_between(
            rounds,
            [max(m - s, 0.0) for m, s in zip(mean, std, strict=True)],
            [min(m + s, 1.0) for m, s in zip(mean, std, strict=True)],
            alpha=0.3,
            label="mean ± std (clipped to [0, 1])",
        )
        ax.plot(rounds, mean, marker=".", label="mean")
        if any("client_accuracy_smallest10" in r for r in records):
            ax.plot(
                *_series(records, "client_accuracy_smallest10"),
                linestyle="--",
                label="smallest 10% of clients",
            )
        ax.set(
            xlabel="round",
            ylabel="held-out accuracy",
            title="per-client accuracy spread",
        )
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / "client_accuracy.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
