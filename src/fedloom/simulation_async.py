"""``simulate_fedbuff``: asynchronous FedBuff on the virtual clock, in this process.

The asynchronous sibling of :func:`fedloom.simulate`: the same data, model, local settings,
engines and evaluation, driven by :func:`fedloom.engine.fedbuff.run_fedbuff` instead of the
round loop.

>>> import fedloom as fl
>>> from fedloom.engine import FedBuff, LogNormal, VirtualClock, draw_profiles
>>> data = fl.federate(fl.load_digits(), lambda ds, rng: fl.partition.iid(ds.num_train, 10, rng=rng))
>>> clock = VirtualClock(draw_profiles(10, speed=LogNormal(100.0, 1.0),
...     down_bps=LogNormal(1e6), up_bps=LogNormal(1e6), seed=0))
>>> history = simulate_fedbuff(fl.fedavg(weighting="uniform"), data, fl.models.digits_mlp,
...     clock=clock, fedbuff=FedBuff(buffer_size=3, concurrency=5), steps=2)
>>> len(history.reports)
2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedloom.algorithms import Algorithm, ServerState
from fedloom.client import LocalTraining
from fedloom.data import FederatedDataset
from fedloom.engine import Callback, Evaluator, History, OnClientError, UpdatePolicy, VirtualClock
from fedloom.engine.fedbuff import FedBuff, run_fedbuff
from fedloom.models import ModelSource, initial_module
from fedloom.params import flatten_buffers, flatten_params
from fedloom.sim import make_executor
from fedloom.tasks import Task, classification

__all__ = ["simulate_fedbuff"]


def simulate_fedbuff(
    algorithm: Algorithm,
    data: FederatedDataset,
    model: ModelSource,
    *,
    clock: VirtualClock,
    fedbuff: FedBuff,
    steps: int,
    local: LocalTraining | None = None,
    task: Task | None = None,
    policy: UpdatePolicy | None = None,
    seed: int = 0,
    engine: str = "sequential",
    eval_every: int = 1,
    eval_clients: bool = False,
    callbacks: Sequence[Callback] = (),
    on_client_error: OnClientError = "skip",
) -> History:
    """Simulate FedBuff for ``steps`` server steps; one report per step (``sim_time_s``,
    staleness, evaluation).

    Args mean what they mean for :func:`fedloom.simulate`; besides:
        algorithm: the server step (``fedavg(weighting="uniform", server_lr=eta_g)`` is the
            paper's).
        clock: every client's speed, bandwidth and availability (its deadline is not used:
            nobody waits).
        fedbuff: buffer size K, concurrency, staleness weighting
            (:class:`fedloom.engine.fedbuff.FedBuff`).
        steps: server steps (model versions) to apply.
        engine: trains the clients that start together (mostly one at a time, so the
            sequential engine is the default).
    """
    (task or classification()).model_inputs(data.dataset.test_batch())
    module = initial_module(model, seed=seed)
    settings = algorithm.local_training(local or LocalTraining())
    executor = make_executor(
        engine, module, data, settings, program=algorithm.client_program(), task=task
    )
    evaluator = Evaluator(module, data, task=task)

    def evaluate(state: ServerState, client_buffers: dict[int, torch.Tensor]) -> dict[str, float]:
        metrics = evaluator.global_metrics(state.params, state.buffers)
        if eval_clients:
            metrics.update(evaluator.client_metrics(state.params, state.buffers, client_buffers))
        return metrics

    try:
        return run_fedbuff(
            algorithm,
            executor,
            num_clients=data.num_clients,
            params=flatten_params(module),
            buffers=flatten_buffers(module),
            clock=clock,
            fedbuff=fedbuff,
            steps=steps,
            seed=seed,
            settings=settings,
            policy=policy,
            evaluate=evaluate,
            eval_every=eval_every,
            callbacks=callbacks,
            on_client_error=on_client_error,
        )
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
