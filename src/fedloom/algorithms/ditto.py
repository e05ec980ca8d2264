"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning through
Personalization"): FedAvg for the global model, plus a personal model per client linked to it
by a proximal term.

Following the paper's Algorithm 1, each sampled client of round ``t``

1. trains the global model from ``w_t`` exactly as FedAvg does and sends its update (the
   server aggregates it as FedAvg would: Ditto does not change the global model);
2. takes its personal model ``v_k`` ``s`` local steps (``personal_steps``, or
   ``personal_epochs`` passes) of SGD on ``F_k(v) + lam / 2 * ||v - w_t||^2``, with ``w_t``
   the model it received this round (not the new global one); a client without ``v_k``
   starts it from ``w_t``.

The two passes are independent (both start from what the client holds at the start of the
round), so their order does not matter; the personal pass draws its minibatches from its own
stream (:func:`personal_plans`). In simulation the personal pass is a second call of the same
engine's executor, built with the proximal term and the personal work
(:func:`personal_program`, :func:`personal_settings`), so every engine computes it exactly as
it computes any FedProx client; ``v_k = w_t + update`` goes into the client-state store under
:data:`~fedloom.algorithms.personal.PERSONAL_MODEL` (:func:`personal_writes`). The
personalized per-client scores (``client_personal_accuracy_*``) evaluate ``v_k``; a client
that never took part is scored with the global model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from fedloom.aggregate import Weighting, pipeline, scale
from fedloom.algorithms.base import Algorithm, ServerState
from fedloom.algorithms.personal import PERSONAL_MODEL, PersonalModel
from fedloom.client import ClientProgram, LocalTraining
from fedloom.client.terms import ProximalTerm
from fedloom.rng import derive_seed
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = [
    "ditto",
    "personal_plans",
    "personal_program",
    "personal_seed",
    "personal_settings",
    "personal_writes",
]


def ditto(
    lam: float,
    *,
    personal_steps: int | None = None,
    personal_epochs: int | None = None,
    server_lr: float = 1.0,
    weighting: Weighting = "examples",
) -> Algorithm:
    """Ditto (Li et al. 2021): FedAvg plus a personal model per client, ``lam`` its link.

    Give ``personal_steps`` (the paper's ``s``) or ``personal_epochs``; the personal pass
    uses the local learning rate, batch size and momentum of the global pass.

    >>> ditto(0.1, personal_steps=5).personal_model.lam
    0.1
    """
    if server_lr <= 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return Algorithm(
        name="ditto",
        aggregation=pipeline(weighting=weighting, server=scale(server_lr)),
        personal_model=PersonalModel(lam=lam, steps=personal_steps, epochs=personal_epochs),
    )


def personal_program(spec: PersonalModel) -> ClientProgram:
    """The personal pass's client program: the proximal term ``lam / 2 ||v - w_t||^2``."""
    return ClientProgram(terms=(ProximalTerm(spec.lam),))


def personal_settings(spec: PersonalModel, settings: LocalTraining) -> LocalTraining:
    """The personal pass's local settings: the global pass's, with the personal work."""
    if spec.steps is not None:
        return replace(settings, steps=spec.steps)
    assert spec.epochs is not None
    return replace(settings, epochs=spec.epochs, steps=None)


def personal_seed(plan: ClientPlan) -> int:
    """The personal pass's minibatch stream: derived from the plan's own seed (itself from
    the run seed, the round and the client), so that a deployed client, which knows only its
    plan's seed, draws the same batches as a simulated one."""
    return derive_seed(plan.seed, "ditto-personal")


def personal_plans(
    state: ServerState, plans: Sequence[ClientPlan], *, seed: int
) -> list[ClientPlan]:
    """The personal pass's plans: each client's own ``v_k`` as the start (none: ``w_t``),
    its own minibatch stream (:func:`personal_seed`; ``seed``, the run seed, is already in
    the plans'), no per-client work override and no gradient correction."""
    out = []
    for plan in plans:
        own = state.clients.get(plan.client_id, {}).get(PERSONAL_MODEL)
        out.append(
            ClientPlan(
                client_id=plan.client_id,
                round=plan.round,
                seed=personal_seed(plan),
                start=own,
            )
        )
    return out


def personal_writes(
    params: torch.Tensor, outcomes: Sequence[ClientResult | ClientFailure]
) -> dict[int, dict[str, torch.Tensor]]:
    """The store writes ``{client: {PERSONAL_MODEL: w_t + update}}`` of the personal pass's
    results whose update is finite (a failed or diverged personal pass keeps the old ``v_k``)."""
    writes: dict[int, dict[str, torch.Tensor]] = {}
    for outcome in outcomes:
        if isinstance(outcome, ClientResult) and bool(torch.isfinite(outcome.update).all()):
            writes[outcome.client_id] = {PERSONAL_MODEL: params + outcome.update}
    return writes
