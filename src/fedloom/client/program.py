"""What an algorithm asks of every client, beyond plain local SGD.

A :class:`ClientProgram` is handed to the executors once, when they are built. It holds

- ``terms``: extra local objective terms (FedProx's proximal term);
- ``statistics``: numbers the client computes and reports with its update, by name.

Per-round, per-client inputs (how much work to do, SCAFFOLD's gradient correction) travel in
the :class:`~fedloom.types.ClientPlan` instead. Together they are everything any engine needs
to train a client of any algorithm, so the engines stay algorithm-agnostic.

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

from fedloom.client.local import LocalTraining
from fedloom.client.objectives import ObjectiveTerm
from fedloom.client.terms import proximal_coefficient
from fedloom.types import ClientPlan

__all__ = ["STATISTICS", "ClientProgram", "plan_settings", "work_norm"]

STATISTICS = ("initial_loss", "update_variance", "work_norm")


@dataclass(frozen=True)
class ClientProgram:
    """Objective terms and reported statistics that every client of an algorithm uses.

    Terms must be picklable (module-level classes or functions) for the process and Ray
    engines.
    """

    terms: tuple[ObjectiveTerm, ...] = ()
    statistics: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.statistics) - set(STATISTICS))
        if unknown:
            raise ValueError(f"unknown client statistics {unknown}; known: {', '.join(STATISTICS)}")

    @property
    def proximal_mu(self) -> float:
        """The summed coefficient of the program's proximal terms (0 without one)."""
        return proximal_coefficient(self.terms)


def plan_settings(settings: LocalTraining, plan: ClientPlan) -> LocalTraining:
    """The local settings for one client: the shared ones with the plan's work override."""
    if plan.steps is not None:
        return replace(settings, steps=plan.steps)
    if plan.epochs is not None:
        return replace(settings, epochs=plan.epochs, steps=None)
    return settings


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
