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

__all__ = ["Transform", "chain", "identity", "scale"]


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
