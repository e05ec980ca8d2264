"""Robust reducers: how a ``[K, P]`` matrix of client updates becomes one update.

The weighted mean (FedAvg) has a breakdown point of zero: one client sending huge values
moves the result anywhere. The robust aggregators here bound what a minority of bad updates
can do, each as defined in its paper:

- :class:`CoordinateMedian` (Yin et al. 2018): per coordinate, the median; with an even count,
  the mean of the two middle values.
- :class:`TrimmedMean` (Yin et al. 2018): per coordinate, drop the ``floor(beta K)`` largest and
  smallest values and average the rest.
- :class:`Krum` (Blanchard et al. 2017): score each update by the summed squared distances to
  its ``K - f - 2`` nearest neighbours; keep the ``m`` best scores (Multi-Krum, ``m > 1``) and
  average them. Needs ``K > 2f + 2``.
- :class:`Bulyan` (El Mhamdi et al. 2018): pick ``theta = K - 2f`` updates by repeated Krum,
  then per coordinate average the ``beta = theta - 2f`` values closest to their median. Needs
  ``K >= 4f + 3``.
- :class:`GeometricMedian` (RFA, Pillutla et al. 2022): the weighted geometric median by
  smoothed Weiszfeld iterations.
- :class:`CenteredClipping` (Karimireddy et al. 2021): iteratively move towards each update,
  clipped to radius ``tau`` around the current estimate, starting from the previous round's
  aggregate (the "history" of the paper's title).

Norm bounding (Sun et al. 2019) is not a rule but a per-client stage in front of any of them
(:func:`fedloom.aggregate.clip`).

Each rule needs every update at once, so each is a stacked reducer
(:class:`~fedloom.aggregate.stacked.Stacked`): the pipeline copies the round's updates into one
``[K, P]`` matrix and calls the rule once.

Weights: the geometric median and centered clipping use the client weights. The rank-based rules (median, trimmed mean, Krum, Bulyan) count every update as one
vote, as in their papers: a Byzantine client can claim any example count, so letting it buy
votes with ``n_k`` would defeat them.

Memory: coordinate-wise rules and distance computations walk over column chunks, so no
intermediate needs more than ``memory_bytes`` (default 256 MiB) beyond the update matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedloom.aggregate.mean import Mean
from fedloom.aggregate.stacked import Stacked, check_matrix

__all__ = [
    "AGGREGATORS",
    "Bulyan",
    "CenteredClipping",
    "CoordinateMedian",
    "GeometricMedian",
    "Krum",
    "Mean",
    "TrimmedMean",
    "column_chunks",
    "pairwise_sq_distances",
    "row_distances",
]

DEFAULT_MEMORY_BYTES = 256 * 1024**2


def column_chunks(
    num_rows: int, num_columns: int, *, bytes_per_value: int, memory_bytes: int
) -> list[slice]:
    """Column slices whose ``[num_rows, chunk]`` intermediates fit in ``memory_bytes``."""
    width = max(1, memory_bytes // max(1, num_rows * bytes_per_value))
    return [slice(start, min(start + width, num_columns)) for start in range(0, num_columns, width)]


def row_distances(
    updates: torch.Tensor,
    center: torch.Tensor | None = None,
    *,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
) -> torch.Tensor:
    """``||u_k - center||`` for every row (the row norms without a center): float32
    differences per column chunk, accumulated across chunks in float64."""
    k, p = updates.shape
    squared = torch.zeros(k, dtype=torch.float64)
    for columns in column_chunks(k, p, bytes_per_value=4, memory_bytes=memory_bytes):
        block = updates[:, columns] if center is None else updates[:, columns] - center[columns]
        squared += block.pow(2).sum(1).double()
    return squared.sqrt()


def pairwise_sq_distances(
    updates: torch.Tensor, *, memory_bytes: int = DEFAULT_MEMORY_BYTES
) -> torch.Tensor:
    """``[K, K]`` squared Euclidean distances, accumulated in float64 over column chunks."""
    k, p = updates.shape
    distances = torch.zeros(k, k, dtype=torch.float64)
    for columns in column_chunks(k, p, bytes_per_value=16, memory_bytes=memory_bytes):
        block = updates[:, columns].double()
        norms = block.pow(2).sum(1)
        distances += norms[:, None] + norms[None, :] - 2.0 * (block @ block.T)
    distances.clamp_(min=0.0)
    distances.fill_diagonal_(0.0)
    return distances


@dataclass(frozen=True)
class CoordinateMedian(Stacked):
    """Coordinate-wise median; an even count averages the two middle values."""

    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        k, p = updates.shape
        out = torch.empty(p, dtype=updates.dtype)
        low, high = (k - 1) // 2, k // 2
        for columns in column_chunks(k, p, bytes_per_value=12, memory_bytes=self.memory_bytes):
            ordered = updates[:, columns].sort(dim=0).values
            out[columns] = (ordered[low] + ordered[high]) / 2 if low != high else ordered[low]
        return out


@dataclass(frozen=True)
class TrimmedMean(Stacked):
    """Coordinate-wise mean after cutting ``floor(beta K)`` values from each end."""

    beta: float = 0.1
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ValueError(f"trimmed mean beta must be in [0, 0.5), got {self.beta}")

    def min_updates(self) -> int:
        # need K - 2 floor(beta K) >= 1
        k = 1
        while k - 2 * math.floor(self.beta * k) < 1:
            k += 1
        return k

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        k, p = updates.shape
        cut = math.floor(self.beta * k)
        if k - 2 * cut < 1:
            raise ValueError(f"trimmed mean with beta={self.beta} cuts all {k} updates")
        out = torch.empty(p, dtype=updates.dtype)
        if cut == 0:
            return updates.mean(0)
        # the kept middle = everything minus the cut largest and smallest values: two partial
        # selections (topk) instead of a full sort, summed in float64 so that cutting huge
        # outliers cancels exactly enough
        for columns in column_chunks(k, p, bytes_per_value=24, memory_bytes=self.memory_bytes):
            block = updates[:, columns]
            total = block.sum(0, dtype=torch.float64)
            high = block.topk(cut, dim=0).values.sum(0, dtype=torch.float64)
            low = block.topk(cut, dim=0, largest=False).values.sum(0, dtype=torch.float64)
            out[columns] = ((total - high - low) / (k - 2 * cut)).to(updates.dtype)
        return out


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of each update: summed squared distances to its ``K - f - 2`` nearest
    neighbours (itself excluded; at least one neighbour when there is one)."""
    k = distances.shape[0]
    if k == 1:
        return torch.zeros(1, dtype=distances.dtype)
    neighbours = max(k - f - 2, 1)
    others = distances + torch.diag(torch.full((k,), math.inf, dtype=distances.dtype))
    return others.sort(dim=1).values[:, :neighbours].sum(1)


def _check_krum(k: int, f: int) -> None:
    if k <= 2 * f + 2:
        raise ValueError(
            f"Krum with f={f} assumed attackers needs more than 2f + 2 = {2 * f + 2} updates, "
            f"got {k}"
        )


@dataclass(frozen=True)
class Krum(Stacked):
    """Krum (``m = 1``) or Multi-Krum: the mean of the ``m`` best-scored updates."""

    f: int = 1
    m: int = 1
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def __post_init__(self) -> None:
        if self.f < 0 or self.m < 1:
            raise ValueError(f"Krum needs f >= 0 and m >= 1, got f={self.f}, m={self.m}")

    def min_updates(self) -> int:
        return max(2 * self.f + 3, self.m)

    def select(self, updates: torch.Tensor) -> torch.Tensor:
        """Indices of the selected updates, best score first."""
        k = updates.shape[0]
        _check_krum(k, self.f)
        if self.m > k:
            raise ValueError(f"Multi-Krum selects m={self.m} of only {k} updates")
        scores = krum_scores(pairwise_sq_distances(updates, memory_bytes=self.memory_bytes), self.f)
        return torch.argsort(scores, stable=True)[: self.m]

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return updates[self.select(updates)].mean(0)


@dataclass(frozen=True)
class Bulyan(Stacked):
    """Bulyan over Krum: robust selection, then a trimmed average around the median."""

    f: int = 1
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def min_updates(self) -> int:
        return 4 * self.f + 3

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        k, p = updates.shape
        if k < 4 * self.f + 3:
            raise ValueError(
                f"Bulyan with f={self.f} needs at least 4f + 3 = {4 * self.f + 3} updates, got {k}"
            )
        distances = pairwise_sq_distances(updates, memory_bytes=self.memory_bytes)
        remaining = list(range(k))
        chosen: list[int] = []
        theta = k - 2 * self.f
        while len(chosen) < theta:
            sub = distances[remaining][:, remaining]
            # Krum with the same f on what is left (near the end, on as few as 2f + 1
            # updates, it scores each by its r - f - 2 >= 1 nearest neighbours)
            best = int(torch.argmin(krum_scores(sub, self.f)))
            chosen.append(remaining.pop(best))
        selected = updates[torch.tensor(chosen)]
        beta = theta - 2 * self.f
        out = torch.empty(p, dtype=updates.dtype)
        for columns in column_chunks(theta, p, bytes_per_value=24, memory_bytes=self.memory_bytes):
            block = selected[:, columns]
            median = CoordinateMedian().combine(block, torch.ones(theta))
            closest = (block - median).abs().argsort(dim=0, stable=True)[:beta]
            out[columns] = block.gather(0, closest).mean(0)
        return out


@dataclass(frozen=True)
class GeometricMedian(Stacked):
    """RFA's smoothed Weiszfeld: ``v <- sum_k b_k u_k / sum_k b_k``,
    ``b_k = w_k / max(nu, ||v - u_k||)``, from the weighted mean, until the objective
    ``sum_k w_k ||v - u_k||`` improves by less than ``tol`` (relative) or ``max_iter``."""

    nu: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-6
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def combine(self, updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        alphas = weights.double() / weights.double().sum()
        v = (alphas.to(updates.dtype) @ updates).clone()
        distances = row_distances(updates, v, memory_bytes=self.memory_bytes)
        objective = float((alphas * distances).sum())
        for _ in range(self.max_iter):
            betas = alphas / distances.clamp(min=self.nu)
            v = (betas / betas.sum()).to(updates.dtype) @ updates
            distances = row_distances(updates, v, memory_bytes=self.memory_bytes)
            new_objective = float((alphas * distances).sum())
            if objective - new_objective <= self.tol * max(new_objective, 1e-30):
                break
            objective = new_objective
        return v


@dataclass(frozen=True)
class CenteredClipping(Stacked):
    """``v <- v + sum_k w_k clip_tau(u_k - v)`` for ``iterations`` steps, starting from the
    previous round's result (zero in the first round); ``clip_tau`` scales a vector to norm
    at most ``tau``."""

    tau: float = 1.0
    iterations: int = 1
    memory_bytes: int = DEFAULT_MEMORY_BYTES

    def __post_init__(self) -> None:
        if not self.tau > 0 or self.iterations < 1:
            raise ValueError(f"centered clipping needs tau > 0 and iterations >= 1, got {self}")

    def init(self, params: torch.Tensor) -> Any:
        return torch.zeros(params.numel())

    def aggregate(
        self,
        updates: torch.Tensor,
        weights: torch.Tensor,
        state: Any,
        client_ids: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, Any]:
        check_matrix(updates, weights)
        v = state.to(updates.dtype) if state is not None else torch.zeros(updates.shape[1])
        w = weights.double() / weights.double().sum()
        for _ in range(self.iterations):
            distances = row_distances(updates, v, memory_bytes=self.memory_bytes)
            factors = (w * (self.tau / distances.clamp(min=1e-30)).clamp(max=1.0)).to(v.dtype)
            # sum_k c_k (u_k - v) without materializing the K x P differences
            v = v + factors @ updates - factors.sum() * v
        return v, v.clone()


AGGREGATORS = (
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "bulyan",
    "geometric_median",
    "centered_clipping",
)
