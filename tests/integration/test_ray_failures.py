"""A failing client, and a Ray actor that dies, on a real local Ray cluster (127.0.0.1)."""

import logging
import os

import pytest
import torch

import _faults
import fedloom as fl
from _faults import break_labels, dying_digits_mlp, mark_client
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import IID, FederatedDataset, federate
from fedloom.engine import plans_for_round
from fedloom.params import flatten_params
from fedloom.sim.process import split_cohort
from fedloom.simulation import initial_module
from fedloom.types import ClientFailure, ClientResult

# Before Ray is imported: on Linux, Ray otherwise advertises the host's own address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")

BROKEN = 5
LOCAL = LocalTraining(epochs=1, batch_size=10, lr=0.1, momentum=0.5)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance on 127.0.0.1. Its workers cannot import the tests' helpers, so
    they travel by value."""
    ray.cloudpickle.register_pickle_by_value(_faults)
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(_faults)


@pytest.fixture(scope="module")
def six(digits) -> FederatedDataset:
    return federate(digits, IID(6), seed=1)


def _run(data, engine, model=fl.models.digits_mlp):
    return fl.simulate(
        fl.fedavg(),
        data,
        model,
        rounds=2,
        fraction=1.0,
        local=LOCAL,
        engine=engine,
        workers=2,
        eval_clients=False,
    )


@pytest.mark.slow
def test_a_raising_client_on_ray_fails_alone(cluster, six):
    history = _run(break_labels(six, BROKEN), "ray")
    without = FederatedDataset(six.dataset, six.client_train[:-1], six.client_holdout[:-1])
    reference = _run(without, "sequential")
    for report in history.reports:
        assert (report.metrics["num_failures"], report.metrics["num_results"]) == (1.0, 5.0)
    start = flatten_params(initial_module(fl.models.digits_mlp, seed=0))
    a, b = history.final_state.params, reference.final_state.params
    assert float((a - b).norm() / (b - start).norm()) < 1e-5


@pytest.mark.slow
def test_a_dead_actor_costs_its_share_and_is_replaced(cluster, six, caplog):
    from fedloom.sim.ray_executor import RayExecutor

    data = mark_client(six, BROKEN)
    module = dying_digits_mlp()
    params = flatten_params(module)
    plans = plans_for_round(6, 1.0, seed=0, round=0)
    context = LocalContext(params)
    doomed = next(s for s in split_cohort(plans, {}, data.client_sizes, 2) if BROKEN in
                  [p.client_id for p in s.plans])  # fmt: skip
    with RayExecutor(module, data, LOCAL, num_workers=2) as executor:
        before = list(executor._actors)
        with caplog.at_level(logging.WARNING, logger="fedloom"):
            got = executor.fit(plans, params, {}, context)
        failed = sorted(r.client_id for r in got if isinstance(r, ClientFailure))
        assert failed == sorted(p.client_id for p in doomed.plans)
        assert all(r.reason.startswith(f"Ray worker {doomed.worker} died") for r in got
                   if isinstance(r, ClientFailure))  # fmt: skip
        assert "starting a new one" in caplog.text
        assert executor._actors[doomed.worker] is not before[doomed.worker]
        healthy = [p for p in plans if p.client_id != BROKEN]
        again = executor.fit(healthy, params, {}, context)
    assert all(isinstance(r, ClientResult) for r in again)
    assert torch.isfinite(torch.stack([r.update for r in again])).all()
