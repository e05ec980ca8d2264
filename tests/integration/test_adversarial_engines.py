"""Adversarial fairness on the process and Ray engines: the same numbers as sequential
(alternating phases on worker processes, gradient reversal on Ray actors)."""

import os

import pytest

from fedloom.algorithms import fedavg
from fedloom.client import LocalTraining
from fedloom.data import Natural, federate
from fedloom.data.fair_synthetic import load_fair_synthetic
from fedloom.simulation import simulate
from fedloom.tasks import AdversarialFairness


@pytest.fixture(scope="module")
def small_fair():
    ds = load_fair_synthetic(num_clients=4, examples_per_client=60, label_bias=0.4, test_size=200)
    return federate(ds, Natural(), holdout_fraction=0.25, seed=0)


def _run(data, engine: str, mode: str, **extra):
    setup = AdversarialFairness(lam=1.0, mode=mode, reads="representation")
    return simulate(
        fedavg(), data, lambda: setup.model(8, 2), task=setup.task(), rounds=2, fraction=1.0,
        local=LocalTraining(epochs=1, batch_size=16, lr=0.1), seed=3, engine=engine, **extra,
    )  # fmt: skip


def test_process_engine_agrees(small_fair):
    a = _run(small_fair, "sequential", "alternating")
    b = _run(small_fair, "process", "alternating", workers=2)
    assert a.metric("test_loss") == pytest.approx(b.metric("test_loss"), abs=1e-5)
    assert a.metric("test_adversary_accuracy") == pytest.approx(
        b.metric("test_adversary_accuracy"), abs=1e-6
    )


def test_ray_engine_agrees(small_fair):
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = pytest.importorskip("ray")
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        b = _run(small_fair, "ray", "reversal", workers=2)
    finally:
        ray.shutdown()
    a = _run(small_fair, "sequential", "reversal")
    assert a.metric("test_loss") == pytest.approx(b.metric("test_loss"), abs=1e-5)
