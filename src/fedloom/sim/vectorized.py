"""The vectorized executor: a whole cohort trains at once with ``torch.func.vmap``.

The clients' parameters are stacked into per-tensor ``[M, ...]`` tensors and every local step
is one call of the pure objective, vmapped over M clients, on a ``[M, B, ...]`` batch gathered
from each client's own data. That removes the per-client overhead that dominates simulators
which train clients one after another, and turns M tiny steps into batched matrix work.

Exactness: each client follows exactly the batch schedule the sequential engine would
(:func:`fedloom.client.batch_schedule` with the plan's seed). A client's last batch of an
epoch may be smaller than B: its padded examples carry weight 0 in the loss, so the gradient
is the mean over its real examples.

Unequal step counts: clients are trained in M *slots*, longest schedule first. When a client
finishes, its slot is refilled at once with the next waiting client (continuous batching).
When no client is waiting, finished slots are dropped from the stack. So every row of every
vmapped step is a real client step, however unequal the clients' sizes. There are no padded
steps, and no masks that momentum or weight decay could leak through.

The number of slots M trades batching against cache: per-client weights are read and written
at every step, and on a CPU the step is fastest when the M copies stay in cache (16-32 for
the 199k-parameter 2NN on 2 cores). M is set from a cache target (16 MiB of parameters) and
capped by a memory budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.func import grad_and_value, vmap

from fedloom.client import (
    ClientProgram,
    LocalContext,
    LocalTraining,
    batch_schedule,
    gradient_noise,
    make_objective,
    plan_settings,
    work_norm,
)
from fedloom.client.alternation import alternating_schedule
from fedloom.client.optim import accumulate_gradient_moments, sgd_step
from fedloom.data import FederatedDataset
from fedloom.params import buffer_spec, param_spec
from fedloom.tasks import Task, take
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["VectorizedExecutor", "default_slots", "vectorization_problem"]

DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
DEFAULT_CACHE_BYTES = 16 * 1024**2


def vectorization_problem(module: nn.Module) -> str | None:
    """Why ``module`` cannot be trained by the vectorized engine, or ``None`` if it can.

    Models with floating-point buffers (batch norm's running statistics) update them in place
    in training mode, which ``vmap`` cannot do per client. Recurrent layers (``nn.LSTM``)
    have no batching rule in ``torch.func``: vmap would fall back to a slow loop and warn.
    """
    recurrent = [type(m).__name__ for m in module.modules() if isinstance(m, nn.RNNBase)]
    if recurrent:
        return f"it has recurrent layers ({recurrent[0]}), which vmap has no batching rule for"
    buffers = buffer_spec(module)
    if buffers.num_params:
        return (
            f"the model has buffers updated during training ({', '.join(buffers.names[:3])}"
            f"{'...' if len(buffers.names) > 3 else ''}), which vmap cannot update per client"
        )
    return None


def _activation_floats_per_example(module: nn.Module, example: tuple[torch.Tensor, ...]) -> int:
    """Floats of every submodule's output for one example (the model's ``[1, ...]`` inputs
    of the data's own dtypes: token ids are integers): the forward activations."""
    total = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in module.modules() if m is not module]
    try:
        with torch.no_grad():
            module(*(torch.zeros_like(tensor) for tensor in example))
    finally:
        for hook in hooks:
            hook.remove()
    return max(total, 1)


def default_slots(
    num_params: int,
    activations_per_example: int,
    batch_size: int,
    *,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> int:
    """Clients trained side by side: as many as fit the cache target, within the memory budget.

    Per client the step holds its parameters, gradient and velocity (3 P floats) and one
    batch's activations with their gradients.
    """
    per_client = 4 * (3 * num_params + 2 * batch_size * activations_per_example)
    by_memory = max(1, memory_budget_bytes // per_client)
    by_cache = max(1, cache_bytes // (4 * num_params))
    return int(min(by_memory, by_cache))


class VectorizedExecutor:
    """Train a cohort as stacked parameters with one vmapped step per local step.

    Args:
        module: the model template (must have no float buffers: see
            :func:`vectorization_problem`).
        data: the clients' data.
        settings: local training (SGD with momentum and weight decay).
        program: the algorithm's objective terms and client statistics.
        task: the loss (default: classification; see :mod:`fedloom.tasks`).
        slots: clients trained side by side (default: :func:`default_slots`).
        memory_budget_bytes: caps the default number of slots.
    """

    def __init__(
        self,
        module: nn.Module,
        data: FederatedDataset,
        settings: LocalTraining,
        *,
        program: ClientProgram | None = None,
        task: Task | None = None,
        slots: int | None = None,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    ):
        problem = vectorization_problem(module)
        if problem is not None:
            raise ValueError(f"cannot vectorize this model: {problem}")
        self.settings = settings
        self.program = program or ClientProgram()
        self.spec = param_spec(module)
        self.objective = make_objective(
            module, self.spec, buffer_spec(module), terms=self.program.terms, task=task
        )
        self._corrected = False
        self._track_gradients = False
        self._train = data.dataset.train_batch()  # every named tensor, indexed by row
        self._client_index = [np.asarray(ix, dtype=np.int64) for ix in data.client_train]
        self._no_buffers = torch.zeros(0)
        batch = settings.batch_size or int(max(len(ix) for ix in data.client_train))
        self.slots = slots or default_slots(
            self.spec.num_params,
            _activation_floats_per_example(
                module, self.objective.task.model_inputs(take(self._train, slice(0, 1)))
            ),
            batch,
            memory_budget_bytes=memory_budget_bytes,
        )
        self._extra_names: tuple[str, ...] = ()
        self._flat0 = torch.zeros(0)
        self._grad = vmap(self._client_grad, in_dims=(0, 0, 0, None, 0))

    def _client_grad(
        self,
        tensors: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        mask: torch.Tensor,
        context: LocalContext,
        own: dict[str, torch.Tensor],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if own:  # this row's client's own extras (EWC's Fisher and anchor), one row of the stack
            context = LocalContext(context.global_params, {**context.extras, **own})
        return grad_and_value(self.objective.loss)(tensors, self._no_buffers, batch, context, mask)

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        alternation = self.program.alternation
        schedules, head_steps = [], []
        for p in plans:
            size, settings = len(self._client_index[p.client_id]), plan_settings(self.settings, p)
            rng = np.random.default_rng(p.seed)
            if alternation is None:
                schedules.append(batch_schedule(size, settings, rng))
                head_steps.append(0)
            else:  # FedRep: the head phase's batches, then the body phase's
                schedule, num_head = alternating_schedule(size, settings, alternation, rng)
                schedules.append(schedule)
                head_steps.append(num_head)
        self._head_steps = head_steps
        results = self._train_cohort(plans, schedules, params, context)
        if "initial_loss" in self.program.statistics:
            for i, plan in enumerate(plans):
                index = torch.from_numpy(self._client_index[plan.client_id])
                start = plan.start if plan.start is not None else params
                loss = self.objective.mean_data_loss(
                    start, self._no_buffers, take(self._train, index)
                )
                statistics = {**results[i].statistics, "initial_loss": loss}
                results[i] = replace(results[i], statistics=statistics)
        return [results[i] for i in range(len(plans))]

    def _fresh_row(
        self, plan: ClientPlan, initial: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """One slot's state at the start of a client: every per-row tensor by key. The
        weights are the plan's ``start`` (a client's personal values) when it has one, else
        the global model's."""
        own = self.spec.views(plan.start.to(torch.float32)) if plan.start is not None else None
        row = {f"w:{n}": (own[n] if own is not None else v) for n, v in initial.items()}
        if self.settings.momentum:
            row.update({f"v:{n}": torch.zeros_like(v) for n, v in initial.items()})
        if self._corrected:
            correction = plan.correction
            if correction is None:
                row.update({f"c:{n}": torch.zeros_like(v) for n, v in initial.items()})
            else:
                views = self.spec.views(correction.to(torch.float32))
                row.update({f"c:{n}": views[n] for n in initial})
        for name in self._extra_names:  # a client without an entry gets zeros (EWC: no penalty)
            value = (plan.extras or {}).get(name)
            row[f"x:{name}"] = (
                value.to(torch.float32) if value is not None else torch.zeros_like(self._flat0)
            )
        if self._track_gradients:
            row.update(
                {f"g:{n}": torch.zeros_like(v, dtype=torch.float64) for n, v in initial.items()}
            )
            row["gsq"] = torch.zeros((), dtype=torch.float64)
        row["loss"] = torch.zeros((), dtype=torch.float64)
        return row

    def _train_cohort(
        self,
        plans: Sequence[ClientPlan],
        schedules: Sequence[list[np.ndarray]],
        params: torch.Tensor,
        context: LocalContext,
    ) -> dict[int, ClientResult]:
        """Continuous batching over ``self.slots`` rows; returns results by plan position.

        Every per-client quantity (weights, velocity, gradient correction, the plan's own
        context extras ``"x:<extra>"``, gradient sums, loss) lives in a stacked ``[M, ...]``
        tensor, keyed ``"w:<name>"``, ``"v:<name>"``,
        ... and updated in place. Weights stay per tensor (the vmapped gradient comes back in
        that form); a client's flat update is cut out of the stack once, when it finishes. A
        flat ``[M, P]`` matrix would cost a full copy of every client's gradient every step.
        """
        settings = self.settings
        initial = self.spec.views(params)
        self._corrected = any(p.correction is not None for p in plans)
        self._extra_names = tuple(sorted({n for p in plans for n in (p.extras or {})}))
        self._flat0 = torch.zeros_like(params, dtype=torch.float32)
        self._track_gradients = "update_variance" in self.program.statistics
        waiting = deque(sorted(range(len(plans)), key=lambda i: -len(schedules[i])))
        rows = [waiting.popleft() for _ in range(min(self.slots, len(waiting)))]
        position = [0] * len(rows)  # the next step of each row's schedule
        fresh = [self._fresh_row(plans[at], initial) for at in rows]
        state = {key: torch.stack([f[key] for f in fresh]) for key in fresh[0]}
        weights = {n: state[f"w:{n}"] for n in self.spec.names}
        batch = max(len(b) for s in schedules for b in s)
        results: dict[int, ClientResult] = {}
        while rows:
            index = np.zeros((len(rows), batch), dtype=np.int64)
            mask = np.zeros((len(rows), batch), dtype=np.float32)
            for r, (at, step) in enumerate(zip(rows, position, strict=True)):
                local = schedules[at][step]
                index[r, : len(local)] = self._client_index[plans[at].client_id][local]
                mask[r, : len(local)] = 1.0
            step_index, step_mask = torch.from_numpy(index), torch.from_numpy(mask)
            own = {n: state[f"x:{n}"] for n in self._extra_names}
            grads, loss = self._grad(
                weights, take(self._train, step_index), step_mask, context, own
            )
            if self._track_gradients:
                squared = torch.zeros(len(rows), dtype=torch.float64)
                for name in self.spec.names:
                    accumulate_gradient_moments(
                        state[f"g:{name}"], squared, grads[name], cohort_dims=1, in_place=True
                    )
                state["gsq"] += squared
            frozen = self._frozen(rows, position, weights, state)
            for name, weight in weights.items():
                velocity = state[f"v:{name}"] if settings.momentum else None
                sgd_step(
                    weight,
                    grads[name],
                    velocity,
                    lr=settings.lr,
                    momentum=settings.momentum,
                    weight_decay=settings.weight_decay,
                    correction=state[f"c:{name}"] if self._corrected else None,
                    in_place=True,
                )
            if frozen is not None:
                self._restore(frozen, rows, position, weights, state)
            state["loss"] += loss.detach().double() * step_mask.sum(1).double()
            position = [p + 1 for p in position]
            finished = {r for r, p in enumerate(position) if p == len(schedules[rows[r]])}
            if not finished:
                continue
            keep = []
            for r in range(len(rows)):
                if r not in finished:
                    keep.append(r)
                    continue
                at = rows[r]
                results[at] = self._result(plans[at], schedules[at], state, r, params)
                if waiting:  # refill the slot with the next client, from its start point
                    rows[r], position[r] = waiting.popleft(), 0
                    for key, value in self._fresh_row(plans[rows[r]], initial).items():
                        state[key][r] = value
                    keep.append(r)
            if len(keep) < len(rows):  # nobody left to refill: drop the finished rows
                selector = torch.tensor(keep, dtype=torch.long)
                state = {key: value[selector] for key, value in state.items()}
                weights = {n: state[f"w:{n}"] for n in self.spec.names}
                rows = [rows[r] for r in keep]
                position = [position[r] for r in keep]
        return results

    def _frozen(
        self,
        rows: Sequence[int],
        position: Sequence[int],
        weights: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor] | None:
        """With FedRep's alternation: copies of the weights (and velocities) before a step,
        so that :meth:`_restore` can put back the coordinates this step must not move."""
        if self.program.alternation is None:
            return None
        saved = {f"w:{n}": w.clone() for n, w in weights.items()}
        if self.settings.momentum:
            saved.update({f"v:{n}": state[f"v:{n}"].clone() for n in weights})
        return saved

    def _restore(
        self,
        frozen: dict[str, torch.Tensor],
        rows: Sequence[int],
        position: Sequence[int],
        weights: dict[str, torch.Tensor],
        state: dict[str, torch.Tensor],
    ) -> None:
        """Put back each row's frozen coordinates: the body during its head phase, the head
        after (the ``position`` is the step just taken)."""
        assert self.program.alternation is not None
        head = self.spec.views(self.program.alternation.head)
        in_head = torch.tensor(
            [step < self._head_steps[at] for at, step in zip(rows, position, strict=True)]
        )
        for name, weight in weights.items():
            lead = in_head.view(-1, *([1] * (weight.dim() - 1)))
            moving = torch.where(lead, head[name], ~head[name])
            weight.copy_(torch.where(moving, weight, frozen[f"w:{name}"]))
            if self.settings.momentum:
                velocity = state[f"v:{name}"]
                velocity.copy_(torch.where(moving, velocity, frozen[f"v:{name}"]))

    def _result(
        self,
        plan: ClientPlan,
        schedule: list[np.ndarray],
        state: dict[str, torch.Tensor],
        row: int,
        params: torch.Tensor,
    ) -> ClientResult:
        flat = torch.cat([state[f"w:{n}"][row].reshape(-1) for n in self.spec.names])
        passes = sum(len(b) for b in schedule)
        num_examples = len(self._client_index[plan.client_id])
        statistics: dict[str, float] = {}
        if self._track_gradients:
            grad_sum = torch.cat([state[f"g:{n}"][row].reshape(-1) for n in self.spec.names])
            statistics["update_variance"] = gradient_noise(
                grad_sum,
                state["gsq"][row],
                num_steps=len(schedule),
                num_example_passes=passes,
                num_examples=num_examples,
            )
        if "work_norm" in self.program.statistics:
            statistics["work_norm"] = work_norm(
                len(schedule),
                momentum=self.settings.momentum,
                lr=self.settings.lr,
                mu=self.program.proximal_mu,
            )
        return ClientResult(
            client_id=plan.client_id,
            update=self.program.transform_update(flat.sub_(params), seed=plan.seed),
            buffers=self._no_buffers,
            num_examples=num_examples,
            num_steps=len(schedule),
            num_example_passes=passes,
            train_loss=float(state["loss"][row]) / max(passes, 1),
            statistics=statistics,
        )
