"""The built-in tasks: classification (optionally class-weighted), regression, next-token
prediction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Ge
from torch.nn import functional as F

from fedloom.tasks.base import Batch, Task
from fedloom.tasks.imbalance import with_class_metrics

__all__ = [
    "WeightedCrossEntropy",
    "balanced_weights",
    "check_class_weights",
    "classification",
    "next_token",
    "regression",
]


def _cross_entropy(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(outputs, batch["y"], reduction="none")


def _mean_cross_entropy(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(outputs, batch["y"])


@dataclass(frozen=True)
class WeightedCrossEntropy:
    """Class-weighted cross-entropy per example: ``weights[y] * CE(outputs, y)``.

    The batch loss is the plain mean of these (not PyTorch's ``sum(w_i CE_i) / sum(w_i)``),
    so the weights also scale the gradient: weights averaging about 1 over the training
    data keep the learning rate comparable with unweighted cross-entropy.
    """

    weights: tuple[float, ...]

    def __call__(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        if outputs.shape[-1] != len(self.weights):
            raise ValueError(
                f"class_weights has {len(self.weights)} entries but the model gives "
                f"{outputs.shape[-1]} classes; give one weight per class"
            )
        weights = torch.tensor(self.weights, dtype=outputs.dtype, device=outputs.device)
        return weights[batch["y"]] * F.cross_entropy(outputs, batch["y"], reduction="none")


def check_class_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """``weights`` as a tuple, or a ``ValueError`` unless they are >= 0, finite, not all 0."""
    values = tuple(float(w) for w in weights)
    if not values or any(not np.isfinite(w) or w < 0 for w in values) or not any(values):
        raise ValueError(
            f"class_weights must be finite, >= 0 and not all 0 (one per class), got {list(values)}"
        )
    return values


def balanced_weights(label_counts: Sequence[int] | np.ndarray) -> tuple[float, ...]:
    """scikit-learn's "balanced" class weights ``n / (C n_c)`` from the training label counts:
    each class weighs the same in total, and the mean weight per example is 1.

    >>> balanced_weights([90, 10])
    (0.5555555555555556, 5.0)
    """
    counts = np.asarray(label_counts, dtype=float)
    missing = np.flatnonzero(counts <= 0).tolist()
    if missing:
        raise ValueError(
            f"balanced class weights need training examples of every class; classes {missing} "
            "have none (give the weights explicitly)"
        )
    return tuple(float(w) for w in counts.sum() / (len(counts) * counts))


def _accuracy(outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    return {"accuracy": (outputs.argmax(1) == batch["y"]).float()}


def classification(
    class_weights: tuple[Annotated[float, Ge(0)], ...] | Literal["balanced"] | None = None,
    class_metrics: tuple[Annotated[int, Ge(0)], ...] = (),
    pr_bins: Annotated[int, Ge(1)] = 100,
) -> Task:
    """Logits ``[B, C]`` against integer labels ``[B]``: cross-entropy, accuracy.

    Args:
        class_weights: one weight per class for class-weighted cross-entropy
            (``weights[y] * CE``, see :class:`WeightedCrossEntropy`), e.g. the inverse class
            frequency to make a rare class count (:func:`balanced_weights`); ``None`` is plain
            cross-entropy. In a config, ``balanced`` computes them from the clients'
            training splits (:func:`fedloom.config.build_task`).
        class_metrics: labels whose recall, precision, F1 and PR-AUC are also reported
            (``recall_<c>`` ..., see :func:`fedloom.tasks.with_class_metrics`).
        pr_bins: score bins of the PR-AUC histogram.

    >>> task = classification()
    >>> logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    >>> task.example_metrics(logits, {"x": logits, "y": labels})["accuracy"]
    tensor([1., 0.])
    """
    task = Task(
        name="classification",
        loss=_cross_entropy,
        metrics=_accuracy,
        score="accuracy",
        mean_loss=_mean_cross_entropy,
    )
    if isinstance(class_weights, str):
        raise ValueError(
            f"class_weights={class_weights!r} is resolved from the data by the config "
            "(fedloom.config.build_task); in Python pass the weights, e.g. "
            "balanced_weights(data.label_histograms().sum(0))"
        )
    if class_weights is not None:
        task = Task(
            name="classification",
            loss=WeightedCrossEntropy(check_class_weights(class_weights)),
            metrics=_accuracy,
            score="accuracy",
        )
    return with_class_metrics(task, class_metrics, bins=pr_bins)


def _squared_error(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    error = outputs.reshape(outputs.shape[0], -1) - batch["y"].reshape(outputs.shape[0], -1)
    return error.pow(2).mean(1)


def _regression_metrics(outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    y = batch["y"].reshape(outputs.shape[0], -1).float()
    return {
        "mse": _squared_error(outputs, batch),
        "_target_mean": y.mean(1),
        "_target_sq_mean": y.pow(2).mean(1),
    }


def _r2(means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``R^2 = 1 - MSE / Var(y)``, with ``Var(y) = E[y^2] - E[y]^2`` over the evaluated set.

    Scalar targets give the usual coefficient of determination; vector targets pool all
    coordinates. NaN where the targets do not vary.
    """
    variance = np.asarray(means["_target_sq_mean"]) - np.asarray(means["_target_mean"]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(variance > 0, 1.0 - np.asarray(means["mse"]) / variance, np.nan)
    return {"r2": r2}


def regression() -> Task:
    """Real-valued outputs against targets of the same size: MSE loss; MSE and R^2.

    >>> task = regression()
    >>> out, y = torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 1.0])
    >>> task.batch_loss(out, {"x": out, "y": y})
    tensor(2.)
    """
    return Task(
        name="regression",
        loss=_squared_error,
        metrics=_regression_metrics,
        score="r2",
        derive=_r2,
    )


def _token_loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over a sequence's tokens: logits ``[B, T, V]``, targets ``[B, T]``."""
    per_token = F.cross_entropy(outputs.flatten(0, 1), batch["y"].flatten(), reduction="none")
    return per_token.view(outputs.shape[0], -1).mean(1)


def _token_metrics(outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
    correct = (outputs.argmax(-1) == batch["y"]).float()
    return {"token_loss": _token_loss(outputs, batch), "token_accuracy": correct.mean(1)}


def _perplexity(means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``exp`` of the mean token loss (sequences of equal length: the per-token mean)."""
    return {"perplexity": np.exp(np.asarray(means["token_loss"]))}


def next_token() -> Task:
    """Next-token prediction: token loss, token accuracy, perplexity.

    Logits ``[B, T, V]`` for targets ``[B, T]`` (the input sequence shifted by one)."""
    return Task(
        name="next_token",
        loss=_token_loss,
        metrics=_token_metrics,
        score="token_accuracy",
        derive=_perplexity,
    )
