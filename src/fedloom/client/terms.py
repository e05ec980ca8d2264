"""Local objective terms that algorithms add to the data loss.

Each term is a small frozen dataclass with ``__call__(w, context) -> scalar``: a value that
pickles (for the process and Ray engines), whose parameters are visible to code that needs
them (FedNova reads the proximal coefficient), and that is registered with
:func:`~fedloom.client.portable.portable`, so that it travels to deployed clients as data (a
name, numbers, tensors) and they build exactly the objective a simulated client does.

A new term is one such dataclass; it needs nothing else to work in every engine and over
the network (``tests/client/test_portable.py`` shows a user's term crossing the wire).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from fedloom.client.objectives import LocalContext, ObjectiveTerm
from fedloom.client.portable import portable
from fedloom.errors import ConfigError

__all__ = [
    "EWC_ANCHOR",
    "EWC_FISHER",
    "EWCTerm",
    "LinearTerm",
    "ProximalTerm",
    "linear_correction",
    "proximal_coefficient",
]

EWC_FISHER = "ewc/fisher"
"""The client-state store entry (and context extra) holding a client's accumulated diagonal
Fisher ``F`` (``[P]``, see :mod:`fedloom.client.ewc`)."""

EWC_ANCHOR = "ewc/anchor"
"""The client-state store entry (and context extra) holding the weights ``w_old`` the EWC
penalty pulls towards (the model at the end of the client's latest task)."""


@portable("proximal")
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


@portable("ewc")
@dataclass(frozen=True)
class EWCTerm:
    """Elastic weight consolidation's ``lam / 2 * sum_i F_i (w_i - w_old_i)^2`` (Kirkpatrick
    et al. 2017, "Overcoming catastrophic forgetting in neural networks", Eq. 3).

    A client that learns tasks one after the other keeps a diagonal Fisher ``F`` (how much
    each weight mattered to its earlier tasks) and the weights ``w_old`` it had when the
    last task ended; the penalty makes the weights that mattered expensive to move, so the
    new task is learned mostly in the directions the old ones did not use. Its gradient is
    ``lam * F * (w - w_old)``.

    ``F`` and ``w_old`` are the client's own (:data:`EWC_FISHER`, :data:`EWC_ANCHOR` in the
    client-state store, reaching the term as ``context.extras``; they never go to the
    server): the term itself is only ``lam``, the same for every client. Before a client's
    first task ends it has no Fisher and the penalty is 0. Combine it with
    :class:`ProximalTerm` for "EWC + proximal to the global model".

    Plain SGD on the penalty alone is stable only while ``lr * lam * max_i F_i < 2``; the
    Fisher grows as tasks accumulate, so a ``lam`` that works for the second task can make
    a later one diverge (the ``lifelong`` study: lr 0.1, ``lam = 100`` works, 300 does not).
    """

    lam: float

    def __post_init__(self) -> None:
        if not self.lam >= 0:
            raise ConfigError(
                f"ewc.lam: EWC's lambda must be >= 0 (0 switches the penalty off), got {self.lam}"
            )

    def __call__(self, w: torch.Tensor, context: LocalContext) -> torch.Tensor:
        fisher = context.extras.get(EWC_FISHER)
        anchor = context.extras.get(EWC_ANCHOR)
        if fisher is None or anchor is None:
            return (w * 0.0).sum()
        return 0.5 * self.lam * (fisher * (w - anchor).pow(2)).sum()


def proximal_coefficient(terms: Iterable[ObjectiveTerm]) -> float:
    """The summed ``mu`` of the proximal terms among ``terms``."""
    return float(sum(t.mu for t in terms if isinstance(t, ProximalTerm)))


@portable("linear")
@dataclass(frozen=True)
class LinearTerm:
    """``<g, w>``: a fixed direction added to every local gradient.

    SCAFFOLD's correction (``g = c - c_k``) and FedDyn's linear term (``g = -g_k``) are of
    this form. Inside fedloom a client's linear term is its plan's ``correction``, which the
    SGD step adds to the gradient directly (:func:`fedloom.client.optim.sgd_step`; the same
    gradient without an autograd pass); it travels to deployed clients as this term.
    """

    g: torch.Tensor

    def __call__(self, w: torch.Tensor, context: LocalContext) -> torch.Tensor:
        return (w * self.g).sum()


def linear_correction(terms: Iterable[ObjectiveTerm]) -> torch.Tensor | None:
    """The summed ``g`` of the linear terms among ``terms`` (``None`` without one)."""
    directions = [t.g for t in terms if isinstance(t, LinearTerm)]
    if not directions:
        return None
    total = directions[0]
    for g in directions[1:]:
        total = total + g
    return total
