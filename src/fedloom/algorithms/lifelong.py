"""Lifelong FedAvg: EWC on the client's own past plus a proximal link to the global model.

Each client minimizes the current task's loss plus

- ``lam / 2 * sum_i F_i (w_i - w_old_i)^2``: elastic weight consolidation (Kirkpatrick et
  al. 2017) with the client's own accumulated diagonal Fisher ``F`` and anchor ``w_old``
  (:class:`~fedloom.client.terms.EWCTerm`, :mod:`fedloom.client.ewc`);
- ``mu / 2 * ||w - w_t||^2``: FedProx's proximal term to the broadcast model (Li et al. 2020).

The server aggregates as FedAvg does. ``F`` and ``w_old`` are the client's entries
``ewc/fisher`` and ``ewc/anchor`` in the client-state store; the algorithm names them in
:attr:`~fedloom.algorithms.Algorithm.client_extras`, so that every engine hands each client
its own (:func:`~fedloom.algorithms.prepare_plans` puts them into the client's plan, and the
sequential and vectorized engines merge them into that client's context). Nothing of them is
in the update the server receives. A client without entries (before its first task ended)
trains on the task loss and the proximal term alone.

The entries are written when a task of the data's task sequence ends
(:class:`~fedloom.client.ewc.FisherEstimate`, run by the simulation after the task's last
round: ``fisher_at_task_ends`` in ``sim/task_sequence.py``).

>>> algorithm = lifelong(1000.0, mu=0.1)
>>> [type(t).__name__ for t in algorithm.program.terms], algorithm.client_extras
(['EWCTerm', 'ProximalTerm'], ('ewc/fisher', 'ewc/anchor'))
"""

from __future__ import annotations

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm
from fedloom.client import ClientProgram
from fedloom.client.ewc import FisherEstimate
from fedloom.client.objectives import ObjectiveTerm
from fedloom.client.terms import EWC_ANCHOR, EWC_FISHER, EWCTerm, ProximalTerm
from fedloom.errors import ConfigError

__all__ = ["lifelong"]


def lifelong(
    lam: float,
    *,
    mu: float = 0.0,
    fisher_examples: int = 100,
    fisher_cap: float | None = None,
    server_lr: float = 1.0,
    weighting: Weighting = "examples",
) -> Algorithm:
    """FedAvg with EWC (``lam``, the client's own Fisher) and, for ``mu > 0``, FedProx's
    proximal term in every client's objective. ``lam = 0`` and ``mu = 0`` is FedAvg.

    When a task of the data's task sequence ends, every client estimates the Fisher of the
    task on its first ``fisher_examples`` rows of it at the global model, adds it to its
    own and moves its anchor there; ``fisher_cap`` caps each coordinate of the sum (keep
    ``lr * lam * fisher_cap <= 1`` for stable SGD; ``None``: no cap).

    The lifelong study uses ``lam = 1000`` with the Fisher capped at ``0.5 / (lr * lam)``
    and ``mu = 0.1`` (``docs/LIFELONG.md``).
    """
    if not lam >= 0:
        raise ConfigError(f"algorithm.lam: EWC's lambda must be >= 0 (0: no EWC), got {lam}")
    if not mu >= 0:
        raise ConfigError(f"algorithm.mu: the proximal coefficient must be >= 0, got {mu}")
    if server_lr <= 0:
        raise ConfigError(f"server.lr: must be > 0, got {server_lr}")
    terms: tuple[ObjectiveTerm, ...] = (EWCTerm(lam),)
    if mu > 0:
        terms = (*terms, ProximalTerm(mu))
    return Algorithm(
        name="lifelong",
        program=ClientProgram(terms=terms),
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        client_extras=(EWC_FISHER, EWC_ANCHOR),
        fisher=FisherEstimate(examples=fisher_examples, cap=fisher_cap),
    )
