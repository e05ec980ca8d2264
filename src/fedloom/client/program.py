"""What an algorithm asks of every client, beyond plain local SGD.

A :class:`ClientProgram` is handed to the executors once, when they are built. It holds

- ``terms``: extra local objective terms (FedProx's proximal term);
- ``statistics``: numbers the client computes and reports with its update, by name;
- ``update_transforms``: what the client does to its update before it leaves, in order
  (local differential privacy's clip and noise, :mod:`fedloom.privacy.local_dp`);
- ``alternation``: FedRep's head-then-body local schedule
  (:mod:`fedloom.client.alternation`), or ``None`` for plain local SGD on every coordinate.
- ``compression``: how the update is encoded on its way to the server, after the
  transforms, and how the broadcast is encoded on its way to the client
  (:mod:`fedloom.compress`; ``None``: float32 both ways).

Per-round, per-client inputs (how much work to do, SCAFFOLD's gradient correction) travel in
the :class:`~fedloom.types.ClientPlan` instead. Together they are everything any engine needs
to train a client of any algorithm, so the engines stay algorithm-agnostic.

Update transforms run on the client, at the same point for every engine: right after local
training, on the update ``w_k - w_t`` (:meth:`ClientProgram.transform_update`, called by
:func:`~fedloom.client.train_client`, the vectorized engine and the deployed client alike).
Each is a pure function of the update and the client's seed for the round (``plan.seed``,
derived from the run seed, the round and the client id), so every engine, and a deployed
client, sends the same vector. Like objective terms they are portable values
(:mod:`fedloom.client.portable`): the server ships them to deployed clients as data.

Statistics (all computed by the client from its own data and trajectory):

- ``"initial_loss"``: the mean data loss of the broadcast model on the client's training
  split, before local training (q-FFL's ``F_k(w_t)``).
- ``"update_variance"``: an estimate of the variance of the client's update, for
  inverse-variance weighting. It is ``sigma_k^2 / n_k``: the per-example gradient variance
  ``sigma_k^2`` (estimated from the spread of the minibatch gradients over the local steps,
  times the batch size, averaged over coordinates) divided by the number of examples. It
  needs at least two local steps.
- ``"work_norm"``: FedNova's ``||a_k||_1``, the total weight the client's local steps put on
  its gradients. It depends on the step count, SGD momentum and the proximal coefficient
  (Wang et al. 2020, Section 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import torch

from fedloom.client.alternation import Alternation
from fedloom.client.local import LocalTraining
from fedloom.client.objectives import LocalContext, ObjectiveTerm
from fedloom.client.terms import proximal_coefficient
from fedloom.types import ClientPlan

if TYPE_CHECKING:
    from fedloom.compress import Compression

__all__ = [
    "STATISTICS",
    "ClientProgram",
    "UpdateTransform",
    "plan_settings",
    "with_own_extras",
    "work_norm",
]

STATISTICS = ("initial_loss", "update_variance", "work_norm")


class UpdateTransform(Protocol):
    """What a client does to its update before sending it: ``[P]`` float32 in, ``[P]``
    float32 out, a pure function of the update and the client's ``seed`` for the round (its
    only source of randomness)."""

    def __call__(self, update: torch.Tensor, *, seed: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class ClientProgram:
    """Objective terms, reported statistics and update transforms that every client of an
    algorithm uses.

    Terms and transforms must be picklable (module-level classes or functions) for the
    process and Ray engines, and portable values to reach deployed clients.
    """

    terms: tuple[ObjectiveTerm, ...] = ()
    statistics: frozenset[str] = field(default_factory=frozenset)
    update_transforms: tuple[UpdateTransform, ...] = ()
    alternation: Alternation | None = None
    compression: Compression | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.statistics) - set(STATISTICS))
        if unknown:
            raise ValueError(f"unknown client statistics {unknown}; known: {', '.join(STATISTICS)}")

    @property
    def proximal_mu(self) -> float:
        """The summed coefficient of the program's proximal terms (0 without one)."""
        return proximal_coefficient(self.terms)

    def transform_update(self, update: torch.Tensor, *, seed: int) -> torch.Tensor:
        """``update`` after the program's update transforms (itself without any)."""
        for transform in self.update_transforms:
            update = transform(update, seed=seed)
        return update


def plan_settings(settings: LocalTraining, plan: ClientPlan) -> LocalTraining:
    """The local settings for one client: the shared ones with the plan's work override."""
    if plan.steps is not None:
        return replace(settings, steps=plan.steps)
    if plan.epochs is not None:
        return replace(settings, epochs=plan.epochs, steps=None)
    return settings


def with_own_extras(context: LocalContext, plan: ClientPlan) -> LocalContext:
    """The round's shared ``context`` with the plan's own extras (EWC's Fisher and anchor)
    merged in; ``context`` itself when the plan has none."""
    if not plan.extras:
        return context
    return replace(context, extras={**context.extras, **plan.extras})


def work_norm(num_steps: int, *, momentum: float = 0.0, lr: float = 0.0, mu: float = 0.0) -> float:
    """FedNova's ``||a||_1`` for ``num_steps`` local steps.

    The client's update is ``-lr * sum_j a_j g_j`` over its gradients ``g_j``; ``||a||_1`` is
    how many gradient steps' worth of movement that is. Plain SGD: ``a = (1, ..., 1)`` and
    ``||a||_1 = tau``. SGD with momentum ``rho``: ``a_j = (1 - rho^(tau - j)) / (1 - rho)``,
    so ``||a||_1 = (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho)``. A proximal term
    ``mu`` shrinks earlier gradients by ``alpha = lr * mu`` per step:
    ``||a||_1 = (1 - (1 - alpha)^tau) / alpha``.

    >>> work_norm(5)
    5.0
    >>> round(work_norm(2, momentum=0.5), 6)  # a = (1.5, 1)
    2.5
    """
    tau = num_steps
    if momentum and mu:
        raise ValueError("FedNova's work norm is defined for momentum or a proximal term, not both")
    if momentum:
        rho = momentum
        return (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
    alpha = lr * mu
    if alpha:
        return (1 - (1 - alpha) ** tau) / alpha
    return float(tau)
