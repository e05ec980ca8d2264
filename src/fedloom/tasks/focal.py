"""Focal loss (Lin et al. 2017, "Focal loss for dense object detection") as a task.

``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``, with ``p_t`` the softmax probability of the
true class. The factor ``(1 - p_t)^gamma`` shrinks the loss of examples the model already
gets right (``p_t`` near 1), so training concentrates on the hard ones, which for a rare class
are mostly its own examples; ``gamma = 0`` is cross-entropy. ``alpha_t`` balances classes:

- binary labels ``{0, 1}`` with ``positive_class = 1`` (the default): ``alpha_t = alpha`` for
  label 1 and ``1 - alpha`` for label 0, exactly the paper's alpha-balanced form (it uses
  ``gamma = 2, alpha = 0.25``: with gamma already down-weighting the many easy negatives,
  its best alpha *lowers* the positives' weight);
- several classes: ``alpha`` weights the one ``positive_class`` (the rare one) and ``1 - alpha``
  every other class. This is our choice, the natural extension of the binary form for
  "one rare class against the rest"; for a weight per class use class-weighted
  cross-entropy (``classification(class_weights=...)``) or ``alpha = None`` (no weighting).

When to use it: a rare class whose examples the model gets wrong while it is confident on the
many easy ones (low recall at a fixed threshold). Class-weighted cross-entropy rescales
whole classes; focal loss rescales examples by how hard they are. Neither changes how the
model ranks examples by much when the classes are separable, which PR-AUC measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from annotated_types import Ge, Le

from fedloom.tasks.base import Batch, Task
from fedloom.tasks.builtin import _accuracy
from fedloom.tasks.imbalance import with_class_metrics

__all__ = ["FocalLoss", "focal"]


@dataclass(frozen=True)
class FocalLoss:
    """Per-example focal loss of logits ``[B, C]`` against labels ``[B]`` (module docstring).

    >>> loss = FocalLoss(gamma=2.0, alpha=0.25, positive_class=1)
    >>> logits = torch.tensor([[0.0, float(torch.tensor(3.0).log())]])  # p(1) = 0.75
    >>> round(float(loss(logits, {"y": torch.tensor([1])})), 6)  # 0.25 * 0.25^2 * -log 0.75
    0.004495
    """

    gamma: float = 2.0
    alpha: float | None = 0.25
    positive_class: int = 1

    def __post_init__(self) -> None:
        check_focal(self.gamma, self.alpha, self.positive_class)

    def __call__(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        labels = batch["y"]
        log_p = torch.log_softmax(outputs, dim=-1).gather(-1, labels[..., None]).squeeze(-1)
        loss = -log_p
        if self.gamma != 0:
            # 1 - p_t without cancellation; the floor keeps the gradient of x^gamma finite
            # (gamma < 1) where p_t rounds to 1, and there -log p_t = 0 anyway
            one_minus = (-torch.expm1(log_p)).clamp(min=torch.finfo(log_p.dtype).tiny)
            loss = one_minus.pow(self.gamma) * loss
        if self.alpha is not None:
            positive = labels == self.positive_class
            loss = loss * torch.where(positive, self.alpha, 1.0 - self.alpha)
        return loss


def check_focal(gamma: float, alpha: float | None, positive_class: int) -> None:
    """A ``ValueError`` naming the option unless ``gamma >= 0``, ``alpha`` in ``[0, 1]``
    (or ``None``) and ``positive_class >= 0``."""
    if not gamma >= 0 or gamma == float("inf"):
        raise ValueError(
            f"gamma must be a finite number >= 0 (0 is cross-entropy; the paper uses 2), "
            f"got {gamma}"
        )
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(
            f"alpha must be in [0, 1] (the weight of the positive class; the others get "
            f"1 - alpha) or None for no weighting, got {alpha}"
        )
    if positive_class < 0:
        raise ValueError(f"positive_class must be a label >= 0, got {positive_class}")


def focal(
    gamma: Annotated[float, Ge(0)] = 2.0,
    alpha: Annotated[float, Ge(0), Le(1)] | None = 0.25,
    positive_class: Annotated[int, Ge(0)] = 1,
    class_metrics: tuple[Annotated[int, Ge(0)], ...] = (),
    pr_bins: Annotated[int, Ge(1)] = 100,
) -> Task:
    """Classification trained with focal loss (Lin et al. 2017); accuracy as its score.

    Args:
        gamma: focusing, ``>= 0``; 0 is (alpha-weighted) cross-entropy.
        alpha: weight of ``positive_class`` in ``[0, 1]``, the other classes get
            ``1 - alpha``; ``None``: no class weighting.
        positive_class: the rare (positive) label alpha refers to.
        class_metrics: labels whose recall, precision, F1 and PR-AUC are also reported.
        pr_bins: score bins of the PR-AUC histogram.

    >>> task = focal(gamma=0.0, alpha=None)  # cross-entropy
    >>> logits, y = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    >>> round(float(task.batch_loss(logits, {"x": logits, "y": y})), 4)
    0.3133
    """
    task = Task(
        name="focal",
        loss=FocalLoss(gamma=float(gamma), alpha=alpha, positive_class=int(positive_class)),
        metrics=_accuracy,
        score="accuracy",
    )
    return with_class_metrics(task, class_metrics, bins=pr_bins)
