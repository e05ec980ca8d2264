"""Elastic weight consolidation on the client: the diagonal Fisher and what the client keeps.

EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks") adds
``lam / 2 * sum_i F_i (w_i - w_old_i)^2`` to the loss of each new task
(:class:`~fedloom.client.terms.EWCTerm`). This module computes what that penalty needs, on
the client, at the end of each task:

- :func:`diagonal_fisher`: the **empirical** diagonal Fisher of the task at the weights the
  task ended with, ``F_i = 1/N sum_n (d/dw_i log p(y_n | x_n; w))^2``: the mean over the
  client's ``N`` examples of the squared *per-example* gradient of the log-likelihood of the
  observed label (the task's per-example loss is the negative log-likelihood; squaring
  removes the sign). Per-example gradients, not squared batch gradients: the square of a
  mean gradient is close to 0 at a minimum, where the Fisher is not.
- :func:`accumulate_fisher`: over tasks the Fishers are **summed**, ``F <- gamma F + F_t``
  with ``gamma = 1`` by default, and the anchor moves to the newest task's weights. With
  ``gamma = 1`` this is the quadratic coefficient of Kirkpatrick's sum of one penalty per
  task, each anchored at its task's end; keeping one anchor is Huszar's (2018, "Note on the
  quadratic penalties in elastic weight consolidation") correction, and ``gamma < 1`` is
  online EWC's decay (Schwarz et al. 2018, "Progress & Compress"). An optional cap per
  coordinate keeps plain SGD stable on the penalty (``lr * lam * F_i < 2``).
- :func:`ewc_writes` and :func:`ewc_context`: the Fisher and the anchor are the client's own
  entries (:data:`~fedloom.client.terms.EWC_FISHER`, :data:`~fedloom.client.terms.EWC_ANCHOR`)
  in the client-state store (:mod:`fedloom.client.store`), read into the context of the
  client's local objective; nothing of them is in the update the server receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.func import functional_call, grad, vmap

from fedloom.client.objectives import LocalContext, Objective
from fedloom.client.store import ClientStates
from fedloom.client.terms import EWC_ANCHOR, EWC_FISHER
from fedloom.errors import ConfigError
from fedloom.tasks import Batch, num_rows, take

__all__ = [
    "FisherEstimate",
    "accumulate_fisher",
    "diagonal_fisher",
    "ewc_context",
    "ewc_writes",
]


def diagonal_fisher(
    objective: Objective,
    params: torch.Tensor,
    buffers: torch.Tensor,
    batch: Batch,
    *,
    chunk: int = 256,
) -> torch.Tensor:
    """The empirical diagonal Fisher ``[P]`` of ``objective``'s task at ``params`` on
    ``batch``: the mean over its examples of the squared per-example gradient of the task's
    loss (the negative log-likelihood of each example's label), computed with
    ``torch.func.vmap`` in chunks of ``chunk`` examples. The objective's terms are left out;
    the model runs in evaluation mode (per-example gradients of a batch-norm model in
    training mode would mix the examples).

    >>> from torch import nn
    >>> from fedloom.params import buffer_spec, param_spec
    >>> module = nn.Linear(2, 2)
    >>> objective = Objective(module, param_spec(module), buffer_spec(module))
    >>> batch = {"x": torch.ones(3, 2), "y": torch.tensor([0, 1, 1])}
    >>> diagonal_fisher(objective, torch.zeros(6), torch.zeros(0), batch)
    tensor([0.2500, 0.2500, 0.2500, 0.2500, 0.2500, 0.2500])
    """
    rows = num_rows(batch)
    if rows == 0:
        raise ValueError("the Fisher needs at least one example; the batch is empty")
    spec, task, module = objective.spec, objective.task, objective.module
    fixed = {
        **objective.buffer_spec.views(buffers),
        **{n: b.clone() for n, b in module.named_buffers() if not b.is_floating_point()},
    }

    def example_loss(tensors: dict[str, torch.Tensor], example: Batch) -> torch.Tensor:
        one = {name: value.unsqueeze(0) for name, value in example.items()}
        outputs = functional_call(module, {**tensors, **fixed}, task.model_inputs(one))
        return task.batch_loss(outputs, one)

    per_example = vmap(grad(example_loss), in_dims=(None, 0))
    tensors = spec.views(params.detach())
    totals = {n: torch.zeros(v.shape, dtype=torch.float64) for n, v in tensors.items()}
    was_training = module.training
    module.eval()
    try:
        for start in range(0, rows, chunk):
            grads = per_example(tensors, take(batch, slice(start, start + chunk)))
            for name in spec.names:
                g = grads[name].reshape(grads[name].shape[0], -1)
                totals[name] += (g * g).sum(0).double().view(totals[name].shape)
    finally:
        module.train(was_training)
    flat = torch.cat([totals[n].reshape(-1) for n in spec.names])
    return (flat / rows).to(params.dtype)


def accumulate_fisher(
    previous: torch.Tensor | None,
    new: torch.Tensor,
    *,
    decay: float = 1.0,
    max_value: float | None = None,
) -> torch.Tensor:
    """``decay * previous + new`` (``new`` when there is no previous Fisher): the Fisher of
    all tasks so far. ``decay = 1`` sums them; ``decay < 1`` is online EWC's forgetting of
    old tasks (Schwarz et al. 2018).

    ``max_value`` caps each coordinate. Plain SGD on the penalty is stable only while
    ``lr * lam * F_i < 2``: the few weights the old tasks depend on most (the output layer)
    would otherwise make SGD oscillate and diverge at a ``lam`` large enough for the many
    weights with a small Fisher to matter. A cap of ``c / (lr * lam)`` with ``c <= 1`` keeps
    those weights held as firmly as one SGD step can (at ``c = 1`` a step puts a weight
    back on its anchor) without diverging. ``None``: no cap (Kirkpatrick et al.'s EWC).

    >>> accumulate_fisher(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5]))
    tensor([1.5000, 2.5000])
    >>> accumulate_fisher(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5]), max_value=2.0)
    tensor([1.5000, 2.0000])
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    if max_value is not None and not max_value > 0:
        raise ValueError(f"max_value must be > 0 or None, got {max_value}")
    total = new.clone() if previous is None else decay * previous + new
    return total if max_value is None else total.clamp(max=max_value)


def ewc_writes(
    own: Mapping[str, torch.Tensor],
    fisher: torch.Tensor,
    params: torch.Tensor,
    *,
    decay: float = 1.0,
    max_value: float | None = None,
) -> dict[str, torch.Tensor]:
    """A client's new store entries at the end of a task: its accumulated Fisher (its
    entries ``own`` plus the task's ``fisher``, see :func:`accumulate_fisher`) and the
    anchor ``params`` (the weights the task ended with)."""
    return {
        EWC_FISHER: accumulate_fisher(
            own.get(EWC_FISHER), fisher, decay=decay, max_value=max_value
        ),
        EWC_ANCHOR: params.detach().clone(),
    }


def ewc_context(
    states: ClientStates,
    client_id: int,
    global_params: torch.Tensor,
    extras: Mapping[str, torch.Tensor] | None = None,
) -> LocalContext:
    """The local context of client ``client_id``: the broadcast model, the round's shared
    ``extras``, and the client's own EWC entries (none before its first task ended)."""
    own = states.get(client_id, {})
    mine = {name: own[name] for name in (EWC_FISHER, EWC_ANCHOR) if name in own}
    return LocalContext(global_params=global_params, extras={**(extras or {}), **mine})


@dataclass(frozen=True)
class FisherEstimate:
    """How a client estimates its Fisher when a task ends: on the first ``examples`` rows of
    its data of the task (:func:`diagonal_fisher`), accumulated with ``decay`` and capped at
    ``cap`` per coordinate (:func:`accumulate_fisher`; ``None``: no cap)."""

    examples: int = 100
    cap: float | None = None
    decay: float = 1.0

    def __post_init__(self) -> None:
        if self.examples < 1:
            raise ConfigError(f"algorithm.fisher_examples: must be >= 1, got {self.examples}")
        if self.cap is not None and not self.cap > 0:
            raise ConfigError(f"algorithm.fisher_cap: must be > 0 or null, got {self.cap}")
        if not 0.0 <= self.decay <= 1.0:
            raise ConfigError(f"FisherEstimate.decay: must be in [0, 1], got {self.decay}")

    def writes(
        self,
        objective: Objective,
        own: Mapping[str, torch.Tensor],
        params: torch.Tensor,
        buffers: torch.Tensor,
        batch: Batch,
    ) -> dict[str, torch.Tensor]:
        """One client's new entries at the end of a task: its Fisher on ``batch`` (its data
        of the task) at ``params`` (the model the task ended with), added to ``own``."""
        fisher = diagonal_fisher(objective, params, buffers, take(batch, slice(0, self.examples)))
        return ewc_writes(own, fisher, params, decay=self.decay, max_value=self.cap)
