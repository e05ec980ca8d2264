"""The reference executor: trains the cohort's clients one after another in this process.

Every other engine is tested against it. A client whose training raises becomes a
:class:`~fedloom.types.ClientFailure` and the others train as if it were not there (see
:mod:`fedloom.sim.isolation`); a broadcast that does not fit the model is the round's error,
not a client's, and raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import nn

from fedloom.client import ClientProgram, LocalContext, LocalTraining, make_objective, train_client
from fedloom.client.program import with_own_extras
from fedloom.data import FederatedDataset
from fedloom.params import buffer_spec, param_spec
from fedloom.sim.isolation import train_or_fail
from fedloom.tasks import Task
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["SequentialExecutor"]


class SequentialExecutor:
    """Train clients one by one with the pure local step; no serialization, one module."""

    def __init__(
        self,
        module: nn.Module,
        data: FederatedDataset,
        settings: LocalTraining,
        *,
        program: ClientProgram | None = None,
        task: Task | None = None,
    ):
        self.module = module
        self.settings = settings
        self.program = program or ClientProgram()
        self.objective = make_objective(
            module, param_spec(module), buffer_spec(module), terms=self.program.terms, task=task
        )
        # Each client's training tensors, gathered once rather than every round.
        self._client_data = [data.client_batch(k) for k in range(data.num_clients)]

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        self.objective.spec.views(params)  # raises for parameters of another model
        self.module.train()
        return [
            train_or_fail(plan, partial(self._train, plan, params, buffers, context))
            for plan in plans
        ]

    def _train(
        self,
        plan: ClientPlan,
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> ClientResult:
        if self.objective.buffer_spec.num_params == 0:  # none to pass (as on the vectorized
            start = torch.zeros(0)  # engine, which callers may have handed no buffers)
        else:
            start = buffers[plan.client_id]
        return train_client(
            plan,
            self._client_data[plan.client_id],
            params,
            start,
            objective=self.objective,
            settings=self.settings,
            context=with_own_extras(context, plan),
            program=self.program,
        )
