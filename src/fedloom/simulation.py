"""``simulate``: run an algorithm on a federated dataset in this process, from Python.

>>> import fedloom as fl
>>> data = fl.federate(fl.load_digits(), lambda ds, rng: fl.partition.iid(ds.num_train, 10, rng=rng))
>>> history = fl.simulate(fl.fedavg(), data, fl.models.digits_mlp, rounds=2, fraction=0.5)
>>> len(history.reports)
2
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import torch
from torch import nn

from fedloom.algorithms import Algorithm, ServerState
from fedloom.algorithms.ditto import personal_program, personal_settings
from fedloom.algorithms.personal import check_buffers, personalized_models, with_model
from fedloom.client import LocalContext, LocalTraining, make_objective
from fedloom.client.program import ClientProgram
from fedloom.client.store import ClientStates
from fedloom.data import FederatedDataset
from fedloom.data.sampling import Sampling
from fedloom.data.selection import Selection
from fedloom.data.task_sequence import TaskSequence, check_task_sequence, task_data
from fedloom.engine import (
    Callback,
    Checkpoints,
    Evaluator,
    Executor,
    History,
    LocalWork,
    OnClientError,
    UpdatePolicy,
    VirtualClock,
    run_rounds,
)
from fedloom.engine.loop import AfterRound
from fedloom.errors import ConfigError
from fedloom.models import ModelSource, initial_module
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.rng import derive_seed
from fedloom.sim import make_executor
from fedloom.sim.alternating import phased_executor
from fedloom.sim.attacks import Attack, AttackedExecutor, choose_attackers, flip_labels
from fedloom.sim.task_sequence import TaskSequenceExecutor, fisher_at_task_ends
from fedloom.tasks import Task, classification
from fedloom.types import ClientPlan, ClientResult

__all__ = ["initial_module", "simulate"]


def finetuned_models(
    executor: Executor,
    data: FederatedDataset,
    state: ServerState,
    client_buffers: Mapping[int, torch.Tensor],
    *,
    seed: int,
) -> dict[int, torch.Tensor]:
    """Every client's fine-tuned copy of the global model: ``executor``'s local steps from
    ``state.params`` on the client's training split, its batches from the stream
    ``("finetune", round, client)`` (clients without training data, and failed or diverged
    fine-tuning, keep the global model)."""
    sizes = data.client_sizes
    plans = [
        ClientPlan(k, state.round, derive_seed(seed, "finetune", state.round, k))
        for k in range(data.num_clients)
        if sizes[k] > 0
    ]
    if not plans:
        return {}
    starts = {p.client_id: client_buffers.get(p.client_id, state.buffers) for p in plans}
    outcomes = executor.fit(plans, state.params, starts, LocalContext(global_params=state.params))
    return {
        o.client_id: state.params + o.update
        for o in outcomes
        if isinstance(o, ClientResult) and bool(torch.isfinite(o.update).all())
    }


def simulate(
    algorithm: Algorithm,
    data: FederatedDataset,
    model: ModelSource,
    *,
    rounds: int,
    fraction: float = 0.1,
    sampling: Sampling = "uniform",
    local: LocalTraining | None = None,
    task: Task | None = None,
    work: LocalWork | None = None,
    attack: Attack | None = None,
    policy: UpdatePolicy | None = None,
    seed: int = 0,
    buffers: Literal["average", "local"] = "average",
    engine: str = "auto",
    workers: int | None = None,
    eval_every: int = 1,
    eval_clients: bool = True,
    eval_train: bool = False,
    finetune_steps: int = 0,
    callbacks: Sequence[Callback] = (),
    checkpoint: Checkpoints | None = None,
    on_client_error: OnClientError = "skip",
    client_states: ClientStates | None = None,
    selection: Selection | None = None,
    clock: VirtualClock | None = None,
    task_sequence: TaskSequence | None = None,
) -> History:
    """Simulate ``rounds`` rounds of ``algorithm`` in this process.

    Args:
        algorithm: e.g. :func:`fedloom.fedavg`.
        data: the clients' data (:func:`fedloom.federate`).
        model: a ``torch.nn.Module`` factory (or a module whose weights start the run).
        rounds: number of rounds.
        fraction: C, the share of clients sampled each round.
        sampling: ``"uniform"``, exactly ``max(round(C K), 1)`` clients a round, or
            ``"poisson"``, each client with probability C (the cohort size varies).
        local: local training settings (epochs, batch size, learning rate...).
        task: what the model learns: its loss and metrics (default
            :func:`fedloom.tasks.classification`; see :mod:`fedloom.tasks`).
        work: per-client local work and stragglers (:class:`fedloom.engine.LocalWork`).
        attack: malicious clients and what they do (:class:`fedloom.sim.attacks.Attack`).
        policy: update validation (:class:`fedloom.engine.UpdatePolicy`).
        seed: derives every random stream: initial weights, sampling, batches.
        buffers: ``"average"`` float buffers like parameters, or keep them ``"local"``.
        engine: ``"sequential"`` (the reference), ``"vectorized"`` (the cohort as one vmapped
            stack), ``"process"`` (a pool of ``workers`` processes), ``"ray"`` (Ray
            actors), or ``"auto"``:
            vectorized where the model allows it.
        workers: processes for the ``process`` engine (default: one per core).
        eval_every: evaluate every this many rounds (and after the last).
        eval_clients: also evaluate on every client's held-out split.
        eval_train: also measure the global training loss (``train_loss_global``).
        finetune_steps: with ``eval_clients``, also fine-tune the global model ``k`` local
            steps (the local settings, no algorithm terms) on each client's training split
            and score it on the client's held-out split: ``client_finetuned_accuracy_*``
            (local fine-tuning as a personalization baseline; 0: off).
        callbacks: observers (metrics files, progress bars); with ``eval_clients`` their
            ``on_client_scores`` receives every client's held-out score after each
            evaluation (:class:`fedloom.engine.ClientScores` keeps them).
        checkpoint: save the state after every round there, and continue from it when it
            already holds a checkpoint of this run (:class:`fedloom.engine.Checkpoints`).
        on_client_error: a client whose training raises, or whose worker process or Ray
            actor dies, is a failure counted in ``num_failures``: ``"skip"`` goes on with
            the others, ``"abort"`` stops the run with a :class:`fedloom.errors.ClientError`
            naming the client, round and error.
        client_states: the empty client-state store for per-client algorithm state
            (default in memory; :class:`fedloom.client.spill.SpilledClientStates` spills it
            to disk for large populations).
        selection: which clients a round asks (:mod:`fedloom.data.selection`; ``None``:
            ``sampling`` alone); power of choice queries the candidates' training loss on
            the broadcast model and weights them by their example counts.
        clock: simulated time and a round deadline (:class:`fedloom.engine.VirtualClock`):
            adds ``sim_time_s`` to the metrics; clients later than the deadline are dropped.
        task_sequence: the clients' data arrives as these tasks (lifelong learning): round
            ``t`` trains on each client's rows of task ``sequence.task_at(t)``; with an
            algorithm that estimates a Fisher (:func:`fedloom.algorithms.lifelong.lifelong`)
            every client estimates its own after each task's last round. ``None``: all data,
            all rounds.
    """
    if buffers not in ("average", "local"):
        raise ValueError(f"buffers must be 'average' or 'local', got {buffers!r}")
    (task or classification()).model_inputs(data.dataset.test_batch())  # names checked once
    module = initial_module(model, seed=seed)
    algorithm = with_model(algorithm, module)  # personal parameters: resolved to a mask
    check_buffers(algorithm, buffers)
    settings = algorithm.local_training(local or LocalTraining())
    attack = attack or Attack()
    attackers = choose_attackers(data.num_clients, attack.fraction, seed=seed)
    train_data = (
        flip_labels(data, attackers, data.dataset.num_classes) if attack.poisons_data else data
    )
    after_round: AfterRound | None = None
    if task_sequence is None:
        if algorithm.fisher is not None:
            raise ConfigError(
                f"data.task_sequence: {algorithm.name} estimates each client's Fisher when a "
                "task ends; give the data a task sequence (tasks and rounds_per_task)"
            )
        executor: Executor = phased_executor(  # one executor, or one per training phase
            module,
            algorithm.client_program(),
            lambda phase, program: make_executor(
                engine, phase, train_data, settings, program=program, task=task, workers=workers
            ),
        )
    else:  # one executor per task, each on its view of the data
        check_task_sequence(train_data, task_sequence)
        views = [task_data(train_data, task_sequence, i) for i in range(task_sequence.num_tasks)]

        def on_view(view: FederatedDataset) -> Callable[[nn.Module, ClientProgram], Executor]:
            def make(phase: nn.Module, program: ClientProgram) -> Executor:
                return make_executor(
                    engine, phase, view, settings, program=program, task=task, workers=workers
                )

            return make

        executor = TaskSequenceExecutor(
            [phased_executor(module, algorithm.client_program(), on_view(view)) for view in views],
            task_sequence,
        )
        if algorithm.fisher is not None:
            plain = make_objective(module, param_spec(module), buffer_spec(module), task=task)
            after_round = fisher_at_task_ends(task_sequence, views, plain, algorithm.fisher)
    if attack.poisons_updates:
        executor = AttackedExecutor(executor, attack, attackers, seed=seed)
    personal_executor: Executor | None = None
    if algorithm.personal_model is not None:  # Ditto: the personal pass, on the same engine
        personal_executor = make_executor(
            engine,
            module,
            train_data,
            personal_settings(algorithm.personal_model, settings),
            program=personal_program(algorithm.personal_model),
            task=task,
            workers=workers,
        )
    if finetune_steps < 0:
        raise ValueError(f"finetune_steps must be >= 0, got {finetune_steps}")
    tuning: Executor | None = None
    if finetune_steps and eval_clients:  # on the clean data: fine-tuning is evaluation
        tuning = make_executor(
            engine, module, data, replace(settings, steps=finetune_steps), task=task,
            workers=workers,
        )  # fmt: skip
    evaluator = Evaluator(module, data, task=task)  # clean labels: attackers' held-out data too

    def evaluate(state: ServerState, client_buffers: dict[int, torch.Tensor]) -> dict[str, float]:
        metrics = evaluator.global_metrics(state.params, state.buffers)
        scores: dict[str, np.ndarray] = {}  # per client, by prefix: for on_client_scores

        def score(prefix: str, own: Mapping[int, torch.Tensor] | None = None) -> None:
            scores[prefix] = evaluator.client_scores(
                state.params, state.buffers, client_buffers, own
            )
            metrics.update(evaluator.score_spread(scores[prefix], prefix=prefix))

        if eval_clients:
            score("client")
            if algorithm.personal is not None or algorithm.personal_model is not None:
                score("client_personal", personalized_models(algorithm, state))
        if tuning is not None:
            score(
                "client_finetuned", finetuned_models(tuning, data, state, client_buffers, seed=seed)
            )
        for callback in callbacks if scores else ():
            hook = getattr(callback, "on_client_scores", None)  # a duck-typed callback has none
            if hook is not None:
                hook(state.round, scores)
        if eval_train:
            metrics.update(evaluator.train_metrics(state.params, state.buffers))
        return metrics

    try:
        return run_rounds(
            algorithm,
            executor,
            num_clients=data.num_clients,
            params=flatten_params(module),
            buffers=flatten_buffers(module),
            rounds=rounds,
            fraction=fraction,
            sampling=sampling,
            seed=seed,
            settings=settings,
            work=work,
            policy=policy,
            local_buffers=buffers == "local",
            evaluate=evaluate,
            eval_every=eval_every,
            callbacks=callbacks,
            checkpoint=checkpoint,
            on_client_error=on_client_error,
            client_states=client_states,
            personal_executor=personal_executor,
            selection=selection,
            after_round=after_round,
            client_losses=evaluator.client_train_losses if selection is not None else None,
            known_examples=(
                dict(enumerate(int(n) for n in data.client_sizes))
                if selection is not None
                else None
            ),
            clock=clock,
        )
    finally:
        for used in (executor, personal_executor, tuning):
            close = getattr(used, "close", None)
            if close is not None:
                close()
