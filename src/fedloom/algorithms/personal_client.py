"""The client half of personal state, for clients that keep it themselves (deployment).

In simulation the server holds every client's personal values (FedPer, FedBN, FedRep) and
personal model (Ditto) in the client-state store and computes each client's start point
(:func:`~fedloom.algorithms.prepare_plans`). A deployed client keeps them in its own store
(:class:`~fedloom.client.store.OwnState`) and never sends them: the server sends what
describes the personal part once, as portable values (:func:`personal_parts`), and the
client

1. starts local training from the received global model with its own personal values in
   place (none yet: the global ones, as a simulated client);
2. keeps ``(global + update)`` on the personal coordinates as its new values, and sends the
   update with those coordinates zeroed (:func:`split_update`): what the server's
   aggregation would drop anyway, so the global model moves exactly as in simulation;
3. under Ditto, also takes its personal model ``v_k`` through the personal pass
   (:func:`personal_pass_plan`, the proximal term and the personal work of
   :mod:`fedloom.algorithms.ditto`) and keeps ``w_t + update`` as the new ``v_k``.

The seeds are the simulation's (the personal pass's stream derives from the plan's seed), so
a deployed run reproduces its simulation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedloom.algorithms.base import Algorithm
from fedloom.algorithms.ditto import personal_seed
from fedloom.algorithms.personal import (
    PERSONAL_MODEL,
    PERSONAL_VALUES,
    PersonalModel,
    personalized_params,
)
from fedloom.client.alternation import Alternation
from fedloom.client.portable import portable
from fedloom.types import ClientPlan

__all__ = [
    "PERSONAL_BUFFERS",
    "PersonalPass",
    "PersonalValues",
    "personal_parts",
    "personal_pass_plan",
    "personal_start",
    "split_buffers",
    "split_update",
]


PERSONAL_BUFFERS = "personal/buffers"
"""A deployed client's own float buffers (FedBN's running statistics), in its own store."""


@portable("personal/values")
@dataclass(frozen=True)
class PersonalValues:
    """The personal coordinates a client keeps (FedPer, FedBN, FedRep) and how they train.

    Attributes:
        mask: ``[P]`` uint8, 1 on the personal coordinates (the wire carries no booleans;
            :attr:`coordinates` is the boolean mask).
        head_epochs, head_steps: FedRep's head phase (0 for both: no alternation; see
            :mod:`fedloom.client.alternation`).
        buffers: the client also keeps its float buffers (FedBN's running batch-norm
            statistics; runs with ``model.buffers: local``) under :data:`PERSONAL_BUFFERS`,
            starts from them, and sends zeros in their place.
    """

    mask: torch.Tensor
    head_epochs: int = 0
    head_steps: int = 0
    buffers: bool = False

    @property
    def coordinates(self) -> torch.Tensor:
        """The boolean ``[P]`` mask of the personal coordinates."""
        return self.mask.bool()

    def alternation(self) -> Alternation | None:
        """FedRep's head-then-body schedule, or ``None``."""
        if not (self.head_epochs or self.head_steps):
            return None
        return Alternation(self.coordinates, self.head_epochs, self.head_steps)


@portable("personal/model")
@dataclass(frozen=True)
class PersonalPass:
    """Ditto's personal pass: the proximal coefficient and the personal work (``steps`` or
    ``epochs``; 0 means not given)."""

    lam: float
    steps: int = 0
    epochs: int = 0

    def spec(self) -> PersonalModel:
        """The :class:`~fedloom.algorithms.personal.PersonalModel` it describes."""
        return PersonalModel(self.lam, steps=self.steps or None, epochs=self.epochs or None)


def personal_parts(
    algorithm: Algorithm, *, local_buffers: bool = False
) -> tuple[PersonalValues | PersonalPass, ...]:
    """What a deployed client needs to keep ``algorithm``'s personal state itself (empty when
    it has none); the personal parameters must be resolved (``with_model``). With
    ``local_buffers`` (``model.buffers: local``) the clients keep their buffers too."""
    parts: list[PersonalValues | PersonalPass] = []
    personal = algorithm.personal
    if personal is not None:
        mask = personal.resolved().to(torch.uint8)
        parts.append(
            PersonalValues(
                mask,
                head_epochs=personal.head_epochs or 0,
                head_steps=personal.head_steps or 0,
                buffers=local_buffers,
            )
        )
    spec = algorithm.personal_model
    if spec is not None:
        parts.append(PersonalPass(spec.lam, steps=spec.steps or 0, epochs=spec.epochs or 0))
    return tuple(parts)


def personal_start(
    params: torch.Tensor, values: PersonalValues, own: Mapping[str, torch.Tensor]
) -> torch.Tensor | None:
    """The start point of a client that keeps its personal values (``None``: the global
    model)."""
    return personalized_params(params, values.coordinates, own)


def split_update(
    params: torch.Tensor, update: torch.Tensor, values: PersonalValues
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(the update to send, the client's new entries)``: the update with the personal
    coordinates zeroed, and ``{PERSONAL_VALUES: (params + update)[mask]}`` (what the server
    writes into its store in simulation)."""
    mask = values.coordinates
    return update.masked_fill(mask, 0.0), {PERSONAL_VALUES: (params + update)[mask]}


def split_buffers(buffers: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(the buffers to send: zeros, the client's new entries)`` for a client that keeps its
    buffers (:attr:`PersonalValues.buffers`)."""
    return torch.zeros_like(buffers), {PERSONAL_BUFFERS: buffers}


def personal_pass_plan(plan: ClientPlan, own: Mapping[str, torch.Tensor]) -> ClientPlan:
    """Ditto's personal pass for a client that keeps its ``v_k``: its own start (none:
    ``w_t``) and stream, no work override and no correction (as
    :func:`fedloom.algorithms.ditto.personal_plans`)."""
    return ClientPlan(
        client_id=plan.client_id,
        round=plan.round,
        seed=personal_seed(plan),
        start=own.get(PERSONAL_MODEL),
    )
