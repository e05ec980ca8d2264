"""Local objective terms that algorithms add to the data loss.

Each term is a small frozen dataclass with ``__call__(w, context) -> scalar``: a value that
pickles (for the process and Ray engines) and whose parameters are visible to code that
needs them (FedNova reads the proximal coefficient).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from fedloom.client.objectives import LocalContext, ObjectiveTerm

__all__ = ["ProximalTerm", "proximal_coefficient"]


@dataclass(frozen=True)
class ProximalTerm:
    """FedProx's ``mu / 2 * ||w - w_t||^2`` (Li et al. 2020, Eq. 2).

    It keeps local iterates near the broadcast model ``w_t`` so that local work on non-IID
    data drifts less; its gradient is ``mu * (w - w_t)``.
    """

    mu: float

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ValueError(f"the proximal coefficient mu must be >= 0, got {self.mu}")

    def __call__(self, w: torch.Tensor, context: LocalContext) -> torch.Tensor:
        return 0.5 * self.mu * (w - context.global_params).pow(2).sum()


def proximal_coefficient(terms: Iterable[ObjectiveTerm]) -> float:
    """The summed ``mu`` of the proximal terms among ``terms``."""
    return float(sum(t.mu for t in terms if isinstance(t, ProximalTerm)))
