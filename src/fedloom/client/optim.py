"""The one local optimizer step of fedloom, shared by every engine.

SGD with optional momentum and weight decay, with exactly the semantics of
``torch.optim.SGD`` (dampening 0, no Nesterov), plus an optional gradient correction:

    g = grad + correction + weight_decay * w
    v = momentum * v + g          (when momentum > 0)
    w = w - lr * v                (or w - lr * g without momentum)

The functions are elementwise, so they take tensors of any shape: one client's flat vector
``[P]`` (sequential engine, deployed client), a stacked cohort ``[M, ...]`` (vectorized
engine, per parameter tensor), or a float64 vector (the quadratic laboratory). The engines
differ only in the leading cohort axis and in ``in_place``: the vectorized engine owns its
stacked state and updates it in place, which saves a copy of every client's weights per
step; everyone else gets new tensors and their arguments are left untouched.

The per-step statistics (running loss, gradient moments for the update-variance estimate)
live here too, for the same reason: one definition, every engine.
"""

from __future__ import annotations

import torch

__all__ = ["accumulate_gradient_moments", "sgd_step"]


def sgd_step(
    params: torch.Tensor,
    grad: torch.Tensor,
    velocity: torch.Tensor | None,
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    correction: torch.Tensor | None = None,
    in_place: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One SGD step: ``(new params, new velocity)``.

    ``velocity`` is ``None`` without momentum. ``correction`` (SCAFFOLD's ``c - c_k``) is added
    to the gradient before weight decay and momentum. With ``in_place`` the step writes into
    ``params`` and ``velocity`` (they must not be views of tensors someone else reads).

    >>> w, v = sgd_step(torch.tensor([1.0]), torch.tensor([2.0]), None, lr=0.5)
    >>> w
    tensor([0.])
    """
    if correction is not None:
        grad = grad.add(correction)
    if weight_decay:
        grad = grad.add(params, alpha=weight_decay)
    if velocity is not None:
        velocity = (velocity.mul_(momentum) if in_place else velocity.mul(momentum)).add_(grad)
        grad = velocity
    if in_place:
        return params.add_(grad, alpha=-lr), velocity
    return params.add(grad, alpha=-lr), velocity


def accumulate_gradient_moments(
    grad_sum: torch.Tensor,
    grad_sq_sum: torch.Tensor,
    grad: torch.Tensor,
    *,
    cohort_dims: int = 0,
    in_place: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add a step's gradient to the running float64 sum and sum of squared norms.

    ``cohort_dims`` leading axes are kept (one squared norm per client); the rest is summed.
    The two running values feed :func:`fedloom.client.gradient_noise`.
    """
    g64 = grad.double()
    squared = g64.pow(2).flatten(cohort_dims).sum(-1) if cohort_dims else g64.pow(2).sum()
    if in_place:
        return grad_sum.add_(g64), grad_sq_sum.add_(squared)
    return grad_sum + g64, grad_sq_sum + squared
