"""Server-side transforms of the aggregated update, in the style of optax.

A :class:`Transform` is a pair of pure functions: ``init(params) -> state`` and
``update(x, state) -> (x, new_state)``. The server applies its transform to the averaged
client update ``Delta_t`` (a pseudo-gradient with the sign of a step) and adds the result to
the global parameters: ``w_{t+1} = w_t + transform(Delta_t)``. Plain FedAvg is ``scale(1)``;
server optimizers (FedAvgM, FedAdam, ...) are further transforms with state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Transform",
    "adagrad",
    "adam",
    "chain",
    "identity",
    "scale",
    "server_momentum",
    "yogi",
]


@dataclass(frozen=True)
class Transform:
    """``init(params) -> state`` and ``update(x, state) -> (x, state)``, both pure."""

    init: Callable[[torch.Tensor], Any]
    update: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


def identity() -> Transform:
    """Pass the update through unchanged."""
    return Transform(init=lambda params: (), update=lambda x, state: (x, state))


def scale(factor: float) -> Transform:
    """Multiply the update by ``factor`` (the server learning rate of FedAvg)."""
    if factor == 1.0:
        return identity()
    return Transform(init=lambda params: (), update=lambda x, state: (x * factor, state))


def chain(*transforms: Transform) -> Transform:
    """Apply transforms in order; the state is the tuple of their states."""

    def init(params: torch.Tensor) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def update(x: torch.Tensor, state: tuple[Any, ...]) -> tuple[torch.Tensor, tuple[Any, ...]]:
        new_states = []
        for transform, sub_state in zip(transforms, state, strict=True):
            x, sub_state = transform.update(x, sub_state)
            new_states.append(sub_state)
        return x, tuple(new_states)

    return Transform(init=init, update=update)


def server_momentum(lr: float, beta: float) -> Transform:
    """FedAvgM (Hsu et al. 2019): ``v = beta * v + Delta``, step ``lr * v``.

    Heavy-ball momentum on the averaged update, like ``torch.optim.SGD`` with momentum on the
    pseudo-gradient ``-Delta``.
    """
    _check_positive("server lr", lr)
    _check_unit("server momentum", beta)

    def update(x: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        velocity = velocity * beta + x
        return velocity * lr, velocity

    return Transform(init=torch.zeros_like, update=update)


AdaptiveRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _adaptive(lr: float, beta1: float, tau: float, second_moment: AdaptiveRule) -> Transform:
    """Reddi et al. 2021, Algorithm 2: ``m = b1 m + (1 - b1) D``, ``v = rule(v, D^2)``,
    step ``lr * m / (sqrt(v) + tau)``, from ``m = 0`` and ``v = tau^2``; no bias correction,
    as in the paper."""
    _check_positive("server lr", lr)
    _check_unit("beta1", beta1)
    _check_positive("tau", tau)

    def init(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(params), torch.full_like(params, tau * tau)

    def update(
        x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        m, v = state
        m = m * beta1 + x * (1 - beta1)
        v = second_moment(v, x * x)
        return lr * m / (v.sqrt() + tau), (m, v)

    return Transform(init=init, update=update)


def adagrad(lr: float, *, beta1: float = 0.9, tau: float = 1e-3) -> Transform:
    """FedAdagrad's server step: ``v = v + D^2``."""
    return _adaptive(lr, beta1, tau, lambda v, squared: v + squared)


def adam(lr: float, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Transform:
    """FedAdam's server step: ``v = b2 v + (1 - b2) D^2``."""
    _check_unit("beta2", beta2)
    return _adaptive(lr, beta1, tau, lambda v, squared: v * beta2 + squared * (1 - beta2))


def yogi(lr: float, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Transform:
    """FedYogi's server step: ``v = v - (1 - b2) D^2 sign(v - D^2)``: ``v`` moves towards
    ``D^2`` by an additive amount, so it grows no faster than Adagrad's and shrinks slowly."""
    _check_unit("beta2", beta2)
    return _adaptive(
        lr, beta1, tau, lambda v, squared: v - (1 - beta2) * squared * torch.sign(v - squared)
    )


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_unit(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
