"""Local objectives as pure functions of a flat parameter vector.

A client minimizes ``data_loss(w; batch) + sum_i term_i(w; context)``. The data loss runs the
model through ``torch.func.functional_call`` on views of ``w``, so its gradient is a flat
vector and the same function can be vmapped over a cohort. Later algorithms add terms
(FedProx's proximal term, SCAFFOLD's correction, EWC) without touching the training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fedloom.params import ParamSpec

__all__ = ["LocalContext", "Objective", "ObjectiveTerm", "make_objective"]


@dataclass(frozen=True)
class LocalContext:
    """What the server sends with the model that an objective term may need.

    ``global_params`` is ``w_t``; ``extras`` holds algorithm-specific tensors (control
    variates, Fisher diagonals, ...) by name.
    """

    global_params: torch.Tensor
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)


ObjectiveTerm = Callable[[torch.Tensor, LocalContext], torch.Tensor]
"""``term(w, context) -> scalar`` added to the data loss."""

Objective = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LocalContext], torch.Tensor
]
"""``objective(w, buffers, x, y, context) -> scalar loss``."""


def make_objective(
    module: nn.Module,
    spec: ParamSpec,
    buffer_spec: ParamSpec,
    *,
    terms: tuple[ObjectiveTerm, ...] = (),
) -> Objective:
    """Mean cross-entropy of ``module`` on a batch, plus the given terms.

    The module is used as a stateless template: its own tensors are never read or written.
    Buffers that the module updates in training mode (batch-norm statistics) are written
    into the ``buffers`` vector passed in, so callers pass a copy they own. Integer buffers
    (batch norm's step counter) are bookkeeping: each call gets a throwaway copy.
    """
    integer_buffers = {name: b for name, b in module.named_buffers() if not b.is_floating_point()}

    def objective(
        params: torch.Tensor,
        buffers: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        context: LocalContext,
    ) -> torch.Tensor:
        tensors = {
            **spec.views(params),
            **buffer_spec.views(buffers),
            **{name: b.clone() for name, b in integer_buffers.items()},
        }
        logits = functional_call(module, tensors, (x,))
        loss = F.cross_entropy(logits, y)
        for term in terms:
            loss = loss + term(params, context)
        return loss

    return objective
