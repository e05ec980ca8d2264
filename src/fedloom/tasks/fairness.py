"""Group-fairness metrics of a classifier: demographic-parity and equalized-odds gaps.

With a prediction ``yhat``, a label ``y`` and a sensitive attribute ``s`` (a group id), as in
Hardt et al. 2016 ("Equality of opportunity in supervised learning") and Zhang et al. 2018:

- **demographic-parity gap**: how much the rate of each predicted class differs between
  groups, ``max_c (max_g P(yhat = c | s = g) - min_g P(yhat = c | s = g))``. For a binary
  classifier and two groups it is ``|P(yhat = 1 | s = 0) - P(yhat = 1 | s = 1)|``.
- **equalized-odds gap**: the same within each true class,
  ``max_{y, c} (max_g P(yhat = c | y, s = g) - min_g P(yhat = c | y, s = g))``; for a binary
  classifier the larger of the true-positive-rate gap and the false-positive-rate gap.

Groups (or, for equalized odds, group-label cells) without examples are left out of the max
and min; where fewer than two groups remain the gap is NaN (a client that holds one group
only has no gap to measure).

The engines average per-example values, globally and per client (a bincount), so the gaps
are computed from means of indicators (:class:`FairnessIndicators` and :class:`FairnessGaps`,
used by :func:`fedloom.tasks.adversarial.adversarial_fairness`): ``P(yhat = c | s = g)`` is
``mean([s = g][yhat = c]) / mean([s = g])``, and so on. :func:`demographic_parity_gap` and
:func:`equalized_odds_gap` compute the same numbers from arrays directly.

>>> yhat, s = np.array([1, 1, 0, 1, 0, 0]), np.array([0, 0, 0, 1, 1, 1])
>>> round(float(demographic_parity_gap(yhat, s)), 4)  # 2/3 - 1/3
0.3333
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FairnessGaps",
    "FairnessIndicators",
    "demographic_parity_gap",
    "equalized_odds_gap",
]


def _spread(rates: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``max - min`` over the group axis (-1) of ``rates`` where ``present``; NaN with fewer
    than two groups present."""
    masked_high = np.where(present, rates, -np.inf).max(-1)
    masked_low = np.where(present, rates, np.inf).min(-1)
    enough = present.sum(-1) >= 2
    return np.where(enough, masked_high - np.where(enough, masked_low, 0.0), np.nan)


def _max_ignoring_nan(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The max over ``axes``, ignoring NaN; NaN where every value is NaN."""
    filled = np.where(np.isnan(values), -np.inf, values).max(axis=axes)
    return np.where(np.isinf(filled), np.nan, filled)


def _gaps_from_means(
    group: np.ndarray, group_pred: np.ndarray, cell: np.ndarray, cell_pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """DP and EO gaps from indicator means (leading axes: clients, or none).

    ``group[..., g]`` = mean([s = g]); ``group_pred[..., c, g]`` = mean([s = g][yhat = c]);
    ``cell[..., y, g]`` = mean([y][s = g]); ``cell_pred[..., y, c, g]`` likewise with
    ``[yhat = c]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = group_pred / group[..., None, :]
        cell_rates = cell_pred / cell[..., :, None, :]
    present = np.broadcast_to(group[..., None, :] > 0, rates.shape)
    parity = _max_ignoring_nan(_spread(rates, present), axes=(-1,))
    cell_present = np.broadcast_to(cell[..., :, None, :] > 0, cell_rates.shape)
    odds = _max_ignoring_nan(_spread(cell_rates, cell_present), axes=(-2, -1))
    return parity, odds


def _one_hot(values: np.ndarray, size: int) -> np.ndarray:
    return (np.asarray(values)[:, None] == np.arange(size)[None, :]).astype(float)


def demographic_parity_gap(
    predictions: np.ndarray, groups: np.ndarray, *, num_classes: int | None = None
) -> float:
    """The demographic-parity gap of predicted classes ``predictions`` over sensitive
    groups ``groups`` (both integer arrays of one row per example; module docstring)."""
    predictions, groups = np.asarray(predictions), np.asarray(groups)
    classes = num_classes or int(predictions.max(initial=0)) + 1
    num_groups = int(groups.max(initial=0)) + 1
    g, c = _one_hot(groups, num_groups), _one_hot(predictions, classes)
    group_pred = (c[:, :, None] * g[:, None, :]).mean(0)
    cell = np.ones((1, num_groups))
    parity, _ = _gaps_from_means(g.mean(0), group_pred, cell, group_pred[None])
    return float(parity)


def equalized_odds_gap(
    predictions: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    num_classes: int | None = None,
) -> float:
    """The equalized-odds gap of ``predictions`` for true ``labels`` over ``groups``
    (integer arrays, one row per example; module docstring)."""
    predictions, labels, groups = np.asarray(predictions), np.asarray(labels), np.asarray(groups)
    classes = num_classes or int(max(predictions.max(initial=0), labels.max(initial=0))) + 1
    num_groups = int(groups.max(initial=0)) + 1
    g, c, y = (
        _one_hot(groups, num_groups),
        _one_hot(predictions, classes),
        _one_hot(labels, classes),
    )
    group = g.mean(0)
    group_pred = (c[:, :, None] * g[:, None, :]).mean(0)
    cell = (y[:, :, None] * g[:, None, :]).mean(0)
    cell_pred = (y[:, :, None, None] * c[:, None, :, None] * g[:, None, None, :]).mean(0)
    _, odds = _gaps_from_means(group, group_pred, cell, cell_pred)
    return float(odds)


def _names(num_classes: int, num_groups: int) -> dict[str, list[str]]:
    """The hidden indicator names, grouped as :func:`_gaps_from_means` reads them."""
    return {
        "group": [f"_s{g}" for g in range(num_groups)],
        "group_pred": [f"_s{g}_p{c}" for c in range(num_classes) for g in range(num_groups)],
        "cell": [f"_s{g}_y{y}" for y in range(num_classes) for g in range(num_groups)],
        "cell_pred": [
            f"_s{g}_y{y}_p{c}"
            for y in range(num_classes)
            for c in range(num_classes)
            for g in range(num_groups)
        ],
    }


@dataclass(frozen=True)
class FairnessIndicators:
    """The per-example indicators behind the gaps (hidden ``"_"`` metrics), from predicted
    classes ``[B]``, labels ``[B]`` and groups ``[B]``: ``G (1 + 2 C + C^2)`` floats per
    example (18 for a binary task and two groups)."""

    num_classes: int
    num_groups: int

    def __call__(
        self, predictions: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        g = torch.nn.functional.one_hot(groups.long(), self.num_groups).float()
        c = torch.nn.functional.one_hot(predictions.long(), self.num_classes).float()
        y = torch.nn.functional.one_hot(labels.long(), self.num_classes).float()
        names = _names(self.num_classes, self.num_groups)
        values: dict[str, torch.Tensor] = {}
        values.update(zip(names["group"], g.unbind(1), strict=True))
        values.update(
            zip(
                names["group_pred"],
                (c[:, :, None] * g[:, None, :]).flatten(1).unbind(1),
                strict=True,
            )
        )
        values.update(
            zip(names["cell"], (y[:, :, None] * g[:, None, :]).flatten(1).unbind(1), strict=True)
        )
        cell_pred = y[:, :, None, None] * c[:, None, :, None] * g[:, None, None, :]
        values.update(zip(names["cell_pred"], cell_pred.flatten(1).unbind(1), strict=True))
        return values


@dataclass(frozen=True)
class FairnessGaps:
    """``demographic_parity_gap`` and ``equalized_odds_gap`` from the indicator means
    (one entry per client, or a single one for the global set), and ``group_majority``:
    the share of the most common group, the accuracy of an adversary that always guesses
    it (chance for an adversary that learned nothing)."""

    num_classes: int
    num_groups: int

    def __call__(self, means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = _names(self.num_classes, self.num_groups)
        C, G = self.num_classes, self.num_groups

        def stack(key: str, shape: tuple[int, ...]) -> np.ndarray:
            arrays = [np.asarray(means[n], float) for n in names[key]]
            stacked = np.stack(arrays, axis=-1)
            return stacked.reshape(stacked.shape[:-1] + shape)

        group = stack("group", (G,))
        parity, odds = _gaps_from_means(
            group, stack("group_pred", (C, G)), stack("cell", (C, G)), stack("cell_pred", (C, C, G))
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            majority = group.max(-1) / group.sum(-1)
        return {
            "demographic_parity_gap": parity,
            "equalized_odds_gap": odds,
            "group_majority": majority,
        }
