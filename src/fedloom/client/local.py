"""Local training as three pure functions: ``local_init``, ``local_step``, ``local_final``.

The round loop never sees an optimizer object: client state is an explicit
:class:`LocalState` value, and one step maps a state and a batch to a new state. Written this
way, the same step runs for one client (sequential engine) or a stacked cohort (``vmap``), and
local objectives compose (see :mod:`fedloom.client.objectives`).

The optimizer step itself is :func:`fedloom.client.optim.sgd_step`, shared by every engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedloom.client.objectives import LocalContext, Objective
from fedloom.client.optim import accumulate_gradient_moments, sgd_step
from fedloom.tasks import Batch, num_rows
from fedloom.types import ClientResult

__all__ = [
    "LocalState",
    "LocalTraining",
    "batch_schedule",
    "gradient_noise",
    "local_final",
    "local_init",
    "local_step",
]


@dataclass(frozen=True)
class LocalTraining:
    """Hyperparameters of a client's local work.

    Attributes:
        epochs: passes over the local data (E). Ignored when ``steps`` is set.
        steps: a fixed number of local steps instead of epochs.
        batch_size: local minibatch size (B); ``None`` means full batch.
        lr: client learning rate.
        momentum: SGD momentum (0 is plain SGD).
        weight_decay: L2 coefficient added to the gradient.
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int | None = 10
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 or None, got {self.steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (full batch), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class LocalState:
    """One client's training state between steps."""

    params: torch.Tensor
    buffers: torch.Tensor
    velocity: torch.Tensor | None
    num_steps: int
    loss_sum: torch.Tensor
    num_example_passes: int
    grad_sum: torch.Tensor | None = None
    grad_sq_sum: torch.Tensor | None = None


def batch_schedule(
    num_examples: int, settings: LocalTraining, rng: np.random.Generator
) -> list[np.ndarray]:
    """The local minibatches, as index arrays into the client's training split.

    Each epoch is a fresh permutation cut into ``ceil(n / B)`` batches (the last may be
    smaller), so ``E`` epochs take ``E * ceil(n / B)`` steps. With ``steps`` set, epochs are
    drawn until that many batches exist. Full batch (``B = None``) uses all examples in order.
    """
    batch_size = min(settings.batch_size or num_examples, num_examples)
    per_epoch = math.ceil(num_examples / batch_size)
    epochs = settings.epochs if settings.steps is None else math.ceil(settings.steps / per_epoch)
    batches: list[np.ndarray] = []
    for _ in range(epochs):
        if settings.batch_size is None:
            order = np.arange(num_examples)
        else:
            order = rng.permutation(num_examples)
        batches.extend(order[i : i + batch_size] for i in range(0, num_examples, batch_size))
    return batches if settings.steps is None else batches[: settings.steps]


def local_init(
    global_params: torch.Tensor,
    buffers: torch.Tensor,
    settings: LocalTraining,
    *,
    track_gradients: bool = False,
) -> LocalState:
    """The state a client starts from: the broadcast model and fresh optimizer state.

    ``track_gradients`` keeps the sum and summed squared norm of the local gradients, from
    which the client estimates its gradient noise (see :func:`gradient_noise`).
    """
    return LocalState(
        params=global_params.clone(),
        buffers=buffers.clone(),
        velocity=torch.zeros_like(global_params) if settings.momentum else None,
        num_steps=0,
        loss_sum=torch.zeros((), dtype=torch.float64),
        num_example_passes=0,
        grad_sum=torch.zeros_like(global_params, dtype=torch.float64) if track_gradients else None,
        grad_sq_sum=torch.zeros((), dtype=torch.float64) if track_gradients else None,
    )


def local_step(
    state: LocalState,
    batch: Batch,
    *,
    objective: Objective,
    settings: LocalTraining,
    context: LocalContext,
    correction: torch.Tensor | None = None,
    trainable: torch.Tensor | None = None,
) -> LocalState:
    """One SGD step on one named batch; returns a new state and leaves ``state`` untouched.

    ``correction`` is added to the objective's gradient (SCAFFOLD's ``c - c_k``), before
    weight decay and momentum. ``trainable`` (a boolean ``[P]`` mask; FedRep's phases, see
    :mod:`fedloom.client.alternation`) keeps every other coordinate, and its momentum,
    exactly as it was.
    """
    buffers = state.buffers.clone()  # batch norm writes running statistics into it
    grad, loss = objective.grad_and_value(state.params, buffers, batch, context)
    rows = num_rows(batch)
    grad_sum, grad_sq_sum = state.grad_sum, state.grad_sq_sum
    if grad_sum is not None and grad_sq_sum is not None:
        grad_sum, grad_sq_sum = accumulate_gradient_moments(grad_sum, grad_sq_sum, grad)
    params, velocity = sgd_step(
        state.params,
        grad,
        state.velocity,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        correction=correction,
    )
    if trainable is not None:
        params = torch.where(trainable, params, state.params)
        if velocity is not None and state.velocity is not None:
            velocity = torch.where(trainable, velocity, state.velocity)
    return LocalState(
        params=params,
        buffers=buffers,
        velocity=velocity,
        num_steps=state.num_steps + 1,
        loss_sum=state.loss_sum + loss.detach().double() * rows,
        num_example_passes=state.num_example_passes + rows,
        grad_sum=grad_sum,
        grad_sq_sum=grad_sq_sum,
    )


def gradient_noise(
    grad_sum: torch.Tensor,
    grad_sq_sum: torch.Tensor | float,
    *,
    num_steps: int,
    num_example_passes: int,
    num_examples: int,
) -> float:
    """The variance of a client's update estimate, ``sigma^2 / n``, from its local gradients.

    The minibatch gradients ``g_1..g_S`` of the local steps have sample variance
    ``(sum ||g_s||^2 - ||sum g_s||^2 / S) / (S - 1)`` (summed over coordinates). A minibatch
    of ``b`` examples has ``b`` times less variance than one example, so the per-example
    variance per coordinate is that times the mean batch size, divided by the number of
    parameters ``P``. The mean gradient over the client's ``n`` examples then has variance
    ``sigma^2 / n``. Returns NaN with fewer than two steps (no spread to measure).
    """
    if num_steps < 2:
        return float("nan")
    sq = float(grad_sq_sum)
    spread = (sq - float(grad_sum.pow(2).sum()) / num_steps) / (num_steps - 1)
    mean_batch = num_example_passes / num_steps
    per_example = max(spread, 0.0) * mean_batch / grad_sum.numel()
    return per_example / num_examples


def local_final(
    state: LocalState,
    global_params: torch.Tensor,
    *,
    client_id: int,
    num_examples: int,
    statistics: dict[str, float] | None = None,
) -> ClientResult:
    """The client's result: its update ``w_k' - w_t`` and what the server weighs it by."""
    passes = max(state.num_example_passes, 1)
    return ClientResult(
        client_id=client_id,
        update=state.params - global_params,
        buffers=state.buffers,
        num_examples=num_examples,
        num_steps=state.num_steps,
        num_example_passes=state.num_example_passes,
        train_loss=float(state.loss_sum) / passes,
        statistics=statistics or {},
    )
