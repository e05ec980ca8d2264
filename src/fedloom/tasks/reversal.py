"""Gradient reversal: the identity forward, ``-scale`` times the gradient backward.

Ganin and Lempitsky 2015 ("Unsupervised domain adaptation by backpropagation") introduced the
layer; Zhang et al. 2018 ("Mitigating unwanted biases with adversarial learning") train a
predictor against an adversary with the same minimax. Put between a network ``f`` (the
predictor) and a head ``a`` (the adversary) that minimizes its own loss ``L_adv``:

    z = f(x; w)         a(grad_reverse(z, lam); u)         loss = L_task(w) + L_adv(w, u)

one backward pass gives the adversary ``dL_adv/du`` (it gets better at its job) and the
predictor ``dL_task/dw - lam * dL_adv/dw`` (it gets worse at helping the adversary): plain
gradient descent on that loss is a simultaneous step of ``min_w max_u L_task - lam * L_adv``
for the predictor and ``min_u L_adv`` for the adversary. ``lam = 0`` trains the adversary
as a bystander probe that cannot influence the predictor.

The function is written with ``setup_context`` and ``generate_vmap_rule``, so it composes
with ``torch.func`` (``grad``, ``vmap``): the vectorized engine trains a cohort of clients
through it exactly as the sequential one trains each.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["GradientReversal", "grad_reverse"]


class GradientReversal(torch.autograd.Function):
    """``forward(x, scale) = x``; ``backward(g) = -scale * g`` (nothing for ``scale``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, scale: float) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.scale = float(inputs[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * -ctx.scale, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, but the gradient flowing back through it is multiplied by ``-scale``.

    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> (3 * grad_reverse(x, 0.5)).sum().backward()
    >>> x.grad
    tensor([-1.5000, -1.5000])
    """
    if not scale >= 0 or scale == float("inf"):
        raise ValueError(f"the reversal scale must be a finite number >= 0, got {scale}")
    return GradientReversal.apply(x, float(scale))
