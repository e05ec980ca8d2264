"""One client's whole local training, from a plan to a result (the sequential reference)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from fedloom.client.alternation import alternating_schedule, trainable
from fedloom.client.local import (
    LocalTraining,
    batch_schedule,
    gradient_noise,
    local_final,
    local_init,
    local_step,
)
from fedloom.client.objectives import LocalContext, Objective
from fedloom.client.program import ClientProgram, plan_settings, work_norm
from fedloom.tasks import Batch, num_rows, take
from fedloom.types import ClientPlan, ClientResult

__all__ = ["train_client"]


def train_client(
    plan: ClientPlan,
    data: Batch,
    global_params: torch.Tensor,
    buffers: torch.Tensor,
    *,
    objective: Objective,
    settings: LocalTraining,
    context: LocalContext,
    program: ClientProgram | None = None,
    transform_seed: int | None = None,
) -> ClientResult:
    """Run one client's local training on its ``data`` (a named batch of its whole training
    split): init, one step per scheduled batch, final.

    Training starts from the plan's ``start`` when it has one (a client's personal values),
    else from ``global_params``; the update is ``final - global_params`` either way.
    The batch order comes from the plan's seed, the amount of work from the plan's override
    (if any) or ``settings`` (FedRep's head phase comes first, see
    :mod:`fedloom.client.alternation`); ``program`` names the statistics to report and the transforms
    the update goes through before it leaves the client (local DP's clip and noise). The
    transforms draw their randomness from ``transform_seed`` (default: the plan's seed; the
    deployed client, ``run_client``, mixes in a secret of its own).
    """
    program = program or ClientProgram()
    settings = plan_settings(settings, plan)
    wanted = program.statistics
    statistics: dict[str, float] = {}
    start = plan.start if plan.start is not None else global_params
    if "initial_loss" in wanted:
        statistics["initial_loss"] = objective.mean_data_loss(start, buffers, data)
    state = local_init(start, buffers, settings, track_gradients="update_variance" in wanted)
    rng = np.random.default_rng(plan.seed)
    num_examples = num_rows(data)
    alternation = program.alternation
    if alternation is None:
        schedule, num_head_steps = batch_schedule(num_examples, settings, rng), 0
    else:  # FedRep: the head alone, then the body alone
        schedule, num_head_steps = alternating_schedule(num_examples, settings, alternation, rng)
    for step, index in enumerate(schedule):
        state = local_step(
            state,
            take(data, torch.from_numpy(index)),
            objective=objective,
            settings=settings,
            context=context,
            correction=plan.correction,
            trainable=None if alternation is None else trainable(alternation, step, num_head_steps),
        )
    if state.grad_sum is not None and state.grad_sq_sum is not None:
        statistics["update_variance"] = gradient_noise(
            state.grad_sum,
            state.grad_sq_sum,
            num_steps=state.num_steps,
            num_example_passes=state.num_example_passes,
            num_examples=num_examples,
        )
    if "work_norm" in wanted:
        statistics["work_norm"] = work_norm(
            state.num_steps, momentum=settings.momentum, lr=settings.lr, mu=program.proximal_mu
        )
    result = local_final(
        state,
        global_params,
        client_id=plan.client_id,
        num_examples=num_examples,
        statistics=statistics,
    )
    if not program.update_transforms:
        return result
    seed = plan.seed if transform_seed is None else transform_seed
    return replace(result, update=program.transform_update(result.update, seed=seed))
