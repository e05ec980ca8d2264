"""Alternating local updates: first the head alone, then the body alone (FedRep).

FedRep (Collins et al. 2021, "Exploiting Shared Representations for Personalized Federated
Learning", Algorithm 1) splits the model into a shared body (the representation ``phi``) and a
personal head ``h``. In each round a client first takes ``tau_h`` local steps on the head with
the body frozen, then ``tau_phi`` steps on the body with the new head frozen. An
:class:`Alternation` describes that schedule for any engine:

- :func:`alternating_schedule` gives the minibatches: the head phase's (``head_epochs``
  passes, or ``head_steps`` steps) followed by the body phase's (the local settings' usual
  work, or the plan's override), all drawn from the client's one random stream, so every
  engine trains the same batches in the same order;
- :func:`trainable` says which coordinates a given step may move: the head mask during the
  head phase, its complement after. The engines restore the frozen coordinates (weights and
  momentum) after each SGD step, so a frozen coordinate stays bit for bit what it was: weight
  decay and momentum cannot leak into it.

A frozen phase keeps its own momentum: the body's velocity is still zero when the body
phase starts, as with a fresh optimizer per phase.

The value is portable (:mod:`fedloom.client.portable`), so it reaches deployed clients as
data: the head mask is a tensor, the work two numbers (0 meaning "not given").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from fedloom.client.local import LocalTraining, batch_schedule
from fedloom.client.portable import portable

__all__ = ["Alternation", "alternating_schedule", "trainable"]


@portable("alternation")
@dataclass(frozen=True)
class Alternation:
    """FedRep's head-then-body local schedule.

    Attributes:
        head: boolean ``[P]`` mask of the head (the personal coordinates).
        head_epochs: passes over the local data for the head phase (0: use ``head_steps``).
        head_steps: local steps for the head phase (0: use ``head_epochs``); exactly one of
            the two is positive.
    """

    head: torch.Tensor
    head_epochs: int = 0
    head_steps: int = 0

    def __post_init__(self) -> None:
        if (self.head_epochs > 0) == (self.head_steps > 0) or min(
            self.head_epochs, self.head_steps
        ) < 0:
            raise ValueError(
                "give exactly one positive head_epochs or head_steps, got "
                f"head_epochs={self.head_epochs}, head_steps={self.head_steps}"
            )
        if self.head.dtype != torch.bool or self.head.dim() != 1:
            raise ValueError(
                f"head must be a boolean [P] mask, got {self.head.dtype} {tuple(self.head.shape)}"
            )

    def head_settings(self, settings: LocalTraining) -> LocalTraining:
        """The head phase's local settings: ``settings`` with the head's work."""
        if self.head_steps:
            return replace(settings, steps=self.head_steps)
        return replace(settings, epochs=self.head_epochs, steps=None)


def alternating_schedule(
    num_examples: int,
    settings: LocalTraining,
    alternation: Alternation,
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], int]:
    """``(batches, num_head_steps)``: the head phase's minibatches, then the body phase's
    (``settings`` is the body's work, after any per-plan override), from one stream."""
    head = batch_schedule(num_examples, alternation.head_settings(settings), rng)
    body = batch_schedule(num_examples, settings, rng)
    return head + body, len(head)


def trainable(alternation: Alternation, step: int, num_head_steps: int) -> torch.Tensor:
    """The boolean ``[P]`` mask of the coordinates step ``step`` (0-based) may move."""
    return alternation.head if step < num_head_steps else ~alternation.head
