"""The round loop's handling of failed clients and its sampling."""

import logging

import numpy as np
import pytest
import torch

import fedloom as fl
from fedloom.client import LocalTraining
from fedloom.data import cohort_size, federate, partition, sample_cohort
from fedloom.engine import Evaluator, run_rounds
from fedloom.errors import ClientError
from fedloom.params import flatten_buffers, flatten_params
from fedloom.sim import SequentialExecutor
from fedloom.types import ClientFailure


class DropClients:
    """A real executor whose listed clients fail, as crashed devices would."""

    def __init__(self, inner, failing):
        self.inner, self.failing = inner, set(failing)

    def fit(self, plans, params, buffers, context):
        survivors = [p for p in plans if p.client_id not in self.failing]
        trained = iter(self.inner.fit(survivors, params, buffers, context))
        return [
            ClientFailure(p.client_id, "device went offline")
            if p.client_id in self.failing
            else next(trained)
            for p in plans
        ]


def _setup(digits):
    data = federate(digits, lambda ds, rng: partition.iid(ds.num_train, 4, rng=rng))
    module = fl.models.digits_mlp()
    executor = SequentialExecutor(module, data, LocalTraining(epochs=1))
    return data, module, executor


def test_failed_clients_are_left_out_of_the_average(digits, caplog):
    data, module, executor = _setup(digits)
    params, buffers = flatten_params(module), flatten_buffers(module)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        partial = run_rounds(
            fl.fedavg(),
            DropClients(executor, {0, 1}),
            num_clients=4,
            params=params,
            buffers=buffers,
            rounds=1,
            fraction=1.0,
        )
    survivors_only = run_rounds(
        fl.fedavg(),
        executor,
        num_clients=4,
        params=params,
        buffers=buffers,
        rounds=1,
        fraction=1.0,
    )
    metrics = partial.reports[0].metrics
    assert metrics["num_failures"] == 2 and metrics["num_results"] == 2
    assert "client 0 failed: device went offline" in caplog.text
    assert not torch.equal(partial.final_state.params, survivors_only.final_state.params)


def test_round_with_no_results_keeps_the_model(digits, caplog):
    data, module, executor = _setup(digits)
    params = flatten_params(module)
    evaluator = Evaluator(module, data)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = run_rounds(
            fl.fedavg(),
            DropClients(executor, range(4)),
            num_clients=4,
            params=params,
            buffers=flatten_buffers(module),
            rounds=2,
            fraction=1.0,
            evaluate=lambda state, _: evaluator.global_metrics(state.params, state.buffers),
        )
    assert torch.equal(history.final_state.params, params)
    assert history.final_state.round == 2
    assert (
        "0 valid updates, 1 needed (4 failed, 0 rejected, 0 dropped); the round is skipped"
        in caplog.text
    )
    assert "test_accuracy" in history.reports[-1].metrics


def test_cohort_sampling():
    assert cohort_size(100, 0.1) == 10
    assert cohort_size(20, 0.01) == 1  # at least one client
    a = sample_cohort(100, 0.1, seed=0, round=3)
    assert len(a) == 10 and len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, sample_cohort(100, 0.1, seed=0, round=3))
    assert not np.array_equal(a, sample_cohort(100, 0.1, seed=0, round=4))
    # Over many rounds every client is sampled about equally often.
    counts = np.bincount(
        np.concatenate([sample_cohort(20, 0.25, seed=1, round=r) for r in range(400)]), minlength=20
    )
    assert counts.min() > 60 and counts.max() < 140  # expected 100


def test_abort_raises_on_the_first_failure_and_saves_nothing_of_its_round(digits, tmp_path):
    data, module, executor = _setup(digits)
    checkpoint = fl.engine.Checkpoints(tmp_path, fingerprint="abort")
    with pytest.raises(ClientError) as caught:
        run_rounds(
            fl.fedavg(),
            DropClients(executor, {1, 3}),
            num_clients=4,
            params=flatten_params(module),
            buffers=flatten_buffers(module),
            rounds=2,
            fraction=1.0,
            checkpoint=checkpoint,
            on_client_error="abort",
        )
    assert str(caught.value).startswith(
        "round 1: client 1 failed: device went offline (and 1 more client(s)). The run stops "
        "because on_client_error is 'abort'"
    )
    assert (caught.value.client_id, caught.value.round) == (1, 1)
    assert checkpoint.load() is None  # a resumed run repeats the round
