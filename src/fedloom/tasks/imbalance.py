"""Metrics for imbalanced classification: recall, precision, F1 and PR-AUC of chosen classes.

Accuracy hides a rare class: a model that never predicts a class of 2% prevalence is 98%
accurate on it. :func:`with_class_metrics` adds to any task whose outputs are logits
``[B, C]`` for integer labels ``[B]`` (classification, focal loss, one of your own), for each
chosen class ``c``:

- ``recall_c`` = TP / (TP + FN), ``precision_c`` = TP / (TP + FP), ``f1_c`` (their harmonic
  mean, ``2 TP / (2 TP + FP + FN)``), all at the argmax prediction;
- ``pr_auc_c``: the area under the precision-recall curve of the score ``softmax(outputs)[c]``,
  as average precision (``sklearn.metrics.average_precision_score``'s definition), from a
  fixed histogram of that score.

A metric that is undefined is NaN (no example of class ``c``; or, for precision, none
predicted as ``c``, where sklearn warns and returns 0). The engines average per-example
values, globally and per client (a bincount), so each metric is a function of means of
per-example indicators (``derive``): ``recall_c = mean(tp) / mean(is_c)``, and PR-AUC from
the means of one indicator per score bin for the examples of class ``c`` and one for the
others. These inputs are named with a leading ``"_"`` and are not reported
(:meth:`fedloom.tasks.Task.summarize`).

**Binning error.** The score ``[0, 1]`` is cut into ``bins`` equal bins, and the histogram's
average precision treats the examples of one bin as tied (exactly what sklearn does for equal
scores). Order within a bin is all that is lost, so with ``TP_b`` / ``FP_b`` the examples of
class ``c`` / of other classes at or above bin ``b`` (counted from the top) and ``n_b`` the
class-``c`` examples in bin ``b`` (``P`` in all), the exact average precision lies in
``[sum_b n_b lo_b / P, sum_b n_b hi_b / P]`` with ``lo_b = (TP_{b+1} + 1) / (TP_{b+1} + 1 +
FP_b)`` and ``hi_b = TP_b / (TP_b + FP_{b+1})`` (``b + 1``: the bin above;
:func:`average_precision_bounds`), and so does the estimate. The error is zero when no bin mixes the classes and is small when few
examples of other classes share a bin with class ``c``'s; more bins shrink it.

>>> from fedloom.tasks import classification
>>> task = with_class_metrics(classification(), classes=(1,), bins=10)
>>> logits, y = torch.tensor([[0.0, 2.0], [0.0, -1.0], [1.0, 0.0]]), torch.tensor([1, 1, 0])
>>> means = {k: v.mean().numpy() for k, v in task.example_metrics(logits, {"y": y}).items()}
>>> {k: round(float(v), 3) for k, v in task.summarize(means).items() if k.endswith("_1")}
{'recall_1': 0.5, 'precision_1': 1.0, 'f1_1': 0.667, 'pr_auc_1': 0.833}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedloom.tasks.base import Batch, Derive, PerExampleMetrics, Task

__all__ = ["average_precision", "average_precision_bounds", "with_class_metrics"]


def _names(label: int, bins: int) -> tuple[str, str, str, list[str], list[str]]:
    prefix = f"_{label}"
    return (
        f"{prefix}_pos",
        f"{prefix}_pred",
        f"{prefix}_tp",
        [f"{prefix}_pos_bin{b:03d}" for b in range(bins)],
        [f"{prefix}_neg_bin{b:03d}" for b in range(bins)],
    )


@dataclass(frozen=True)
class _ClassMetrics:
    """The base task's per-example metrics plus the indicators of each chosen class."""

    base: PerExampleMetrics
    classes: tuple[int, ...]
    bins: int

    def __call__(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        values = dict(self.base(outputs, batch))
        labels = batch["y"]
        predicted = outputs.argmax(1)
        probabilities = torch.softmax(outputs.detach().float(), dim=1)
        for label in self.classes:
            if label >= outputs.shape[1]:
                raise ValueError(
                    f"class_metrics names label {label}, but the model gives "
                    f"{outputs.shape[1]} classes (labels 0..{outputs.shape[1] - 1})"
                )
            pos_name, pred_name, tp_name, pos_bins, neg_bins = _names(label, self.bins)
            positive = (labels == label).float()
            predicted_positive = (predicted == label).float()
            values[pos_name] = positive
            values[pred_name] = predicted_positive
            values[tp_name] = positive * predicted_positive
            score_bin = (probabilities[:, label] * self.bins).long().clamp(0, self.bins - 1)
            one_hot = torch.nn.functional.one_hot(score_bin, self.bins).float()
            in_pos, in_neg = one_hot * positive[:, None], one_hot * (1.0 - positive)[:, None]
            for b in range(self.bins):
                values[pos_bins[b]] = in_pos[:, b]
                values[neg_bins[b]] = in_neg[:, b]
        return values


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


def average_precision(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Average precision from score histograms (last axis: bins, lowest score first).

    ``positives[..., b]`` / ``negatives[..., b]`` count (or are proportional to the counts
    of) the positive / negative examples whose score falls in bin ``b``. Examples of one bin
    count as tied: ``sum_b n_b / P * TP_b / (TP_b + FP_b)``, thresholds from the top bin
    down. NaN where there is no positive example.
    """
    positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
    tp = np.cumsum(positives[..., ::-1], axis=-1)
    fp = np.cumsum(negatives[..., ::-1], axis=-1)
    precision = _ratio(tp, tp + fp)
    terms = np.where(positives[..., ::-1] > 0, positives[..., ::-1] * precision, 0.0)
    return _ratio(terms.sum(-1), tp[..., -1])


def average_precision_bounds(
    positives: np.ndarray, negatives: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The range the exact average precision can take given only the histogram counts.

    Whatever the order of examples inside each bin (and however sklearn groups tied
    scores), every positive of bin ``b`` is credited a precision in
    ``[(TP_above + 1) / (TP_above + 1 + FP_b), TP_b / (TP_b + FP_above)]`` (``_above``:
    the bins above ``b``; ``TP_b``, ``FP_b``: at or above ``b``). Counts, not means: the
    ``+ 1`` is one example.
    """
    positives, negatives = np.asarray(positives, float), np.asarray(negatives, float)
    pos, neg = positives[..., ::-1], negatives[..., ::-1]
    tp, fp = np.cumsum(pos, axis=-1), np.cumsum(neg, axis=-1)
    tp_above, fp_above = tp - pos, fp - neg
    low = _ratio(tp_above + 1, tp_above + 1 + fp)
    high = _ratio(tp, tp + fp_above)
    total = tp[..., -1]
    low_sum = np.where(pos > 0, pos * low, 0.0).sum(-1)
    high_sum = np.where(pos > 0, pos * high, 0.0).sum(-1)
    return _ratio(low_sum, total), _ratio(high_sum, total)


@dataclass(frozen=True)
class _ClassDerive:
    """Recall, precision, F1 and PR-AUC of each chosen class from the indicator means."""

    base: Derive | None
    classes: tuple[int, ...]
    bins: int

    def __call__(self, means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = dict(self.base(means)) if self.base is not None else {}
        for label in self.classes:
            pos_name, pred_name, tp_name, pos_bins, neg_bins = _names(label, self.bins)
            tp = np.asarray(means[tp_name], float)
            positive = np.asarray(means[pos_name], float)
            predicted = np.asarray(means[pred_name], float)
            out[f"recall_{label}"] = _ratio(tp, positive)
            out[f"precision_{label}"] = _ratio(tp, predicted)
            out[f"f1_{label}"] = _ratio(2 * tp, positive + predicted)
            pos_hist = np.stack([np.asarray(means[n], float) for n in pos_bins], axis=-1)
            neg_hist = np.stack([np.asarray(means[n], float) for n in neg_bins], axis=-1)
            out[f"pr_auc_{label}"] = average_precision(pos_hist, neg_hist)
        return out


def with_class_metrics(task: Task, classes: Sequence[int], *, bins: int = 100) -> Task:
    """``task`` that also reports ``recall_c``, ``precision_c``, ``f1_c``, ``pr_auc_c`` for
    each label ``c`` in ``classes`` (see the module docstring; ``bins`` score bins for PR-AUC).

    The task's outputs must be logits ``[B, C]`` and its batches hold integer labels ``"y"``.
    Every class adds ``3 + 2 * bins`` hidden per-example means to an evaluation.
    """
    classes = tuple(int(c) for c in classes)
    if any(c < 0 for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct labels >= 0, got {list(classes)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if not classes:
        return task
    return dataclasses.replace(
        task,
        metrics=_ClassMetrics(task.metrics, classes, bins),
        derive=_ClassDerive(task.derive, classes, bins),
    )
