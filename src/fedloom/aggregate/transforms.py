"""Aggregate stages made of two pure functions: the server optimizers, in the style of optax.

A :class:`Transform` is ``init(params) -> state`` and ``update(x, state, **context) ->
(x, new_state)``; it is an aggregate stage (:class:`~fedloom.aggregate.stage.ServerStage`) of
the pipeline. The server applies its aggregate stages to the reduced client update
``Delta_t`` (a pseudo-gradient with the sign of a step) and adds the result to the global
parameters: ``w_{t+1} = w_t + transform(Delta_t)``. Plain FedAvg is ``scale(1)``; server
optimizers (FedAvgM, FedAdam, ...) are further transforms with state. ``context`` holds the
round's ``cohort``, ``params`` and ``info`` for stages that read them; these ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Transform",
    "adagrad",
    "adam",
    "identity",
    "scale",
    "server_momentum",
    "yogi",
]


@dataclass(frozen=True)
class Transform:
    """An aggregate stage from ``init(params) -> state`` and
    ``update(x, state, **context) -> (x, state)``, both pure."""

    init: Callable[[torch.Tensor], Any] = field(repr=False)
    update: Callable[..., tuple[torch.Tensor, Any]] = field(repr=False)
    name: str = "transform"
    kind: str = "server"


def identity() -> Transform:
    """Pass the update through unchanged."""
    return Transform(lambda params: (), lambda x, state, **_: (x, state), "identity")


def scale(factor: float) -> Transform:
    """Multiply the update by ``factor`` (the server learning rate of FedAvg)."""
    if factor == 1.0:
        return identity()
    return Transform(lambda params: (), lambda x, state, **_: (x * factor, state), "scale")


def server_momentum(lr: float, beta: float) -> Transform:
    """FedAvgM (Hsu et al. 2019): ``v = beta * v + Delta``, step ``lr * v``.

    Heavy-ball momentum on the averaged update, like ``torch.optim.SGD`` with momentum on the
    pseudo-gradient ``-Delta``.
    """
    _check_positive("server lr", lr)
    _check_unit("server momentum", beta)

    def update(
        x: torch.Tensor, velocity: torch.Tensor, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        velocity = velocity * beta + x
        return velocity * lr, velocity

    return Transform(torch.zeros_like, update, "server_momentum")


AdaptiveRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _adaptive(
    name: str, lr: float, beta1: float, tau: float, second_moment: AdaptiveRule
) -> Transform:
    """Reddi et al. 2021, Algorithm 2: ``m = b1 m + (1 - b1) D``, ``v = rule(v, D^2)``,
    step ``lr * m / (sqrt(v) + tau)``, from ``m = 0`` and ``v = tau^2``; no bias correction,
    as in the paper."""
    _check_positive("server lr", lr)
    _check_unit("beta1", beta1)
    _check_positive("tau", tau)

    def init(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(params), torch.full_like(params, tau * tau)

    def update(
        x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], **_: Any
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        m, v = state
        m = m * beta1 + x * (1 - beta1)
        v = second_moment(v, x * x)
        return lr * m / (v.sqrt() + tau), (m, v)

    return Transform(init, update, name)


def adagrad(lr: float, *, beta1: float = 0.9, tau: float = 1e-3) -> Transform:
    """FedAdagrad's server step: ``v = v + D^2``."""
    return _adaptive("adagrad", lr, beta1, tau, lambda v, squared: v + squared)


def adam(lr: float, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Transform:
    """FedAdam's server step: ``v = b2 v + (1 - b2) D^2``."""
    _check_unit("beta2", beta2)
    return _adaptive("adam", lr, beta1, tau, lambda v, squared: v * beta2 + squared * (1 - beta2))


def yogi(lr: float, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Transform:
    """FedYogi's server step: ``v = v - (1 - b2) D^2 sign(v - D^2)``: ``v`` moves towards
    ``D^2`` by an additive amount, so it grows no faster than Adagrad's and shrinks slowly."""
    _check_unit("beta2", beta2)
    return _adaptive(
        "yogi",
        lr,
        beta1,
        tau,
        lambda v, squared: v - (1 - beta2) * squared * torch.sign(v - squared),
    )


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_unit(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
