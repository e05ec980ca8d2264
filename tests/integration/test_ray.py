"""The Ray engine on a real local Ray cluster, bound to loopback."""

import os
import re
import subprocess

import pytest
import torch

import fedloom as fl
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import Shards, federate
from fedloom.errors import FedloomError
from fedloom.params import flatten_params
from fedloom.simulation import initial_module
from fedloom.types import ClientPlan

# Before Ray is imported: on Linux, Ray otherwise advertises the host's own address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance on 127.0.0.1 (as the environment requires on Linux)."""
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _ray_listeners() -> list[str]:
    lines = subprocess.run(["ss", "-tlnp"], capture_output=True, text=True, check=True).stdout
    return [line for line in lines.splitlines() if re.search(r"raylet|gcs_server|ray::", line)]


def test_cluster_listens_on_loopback_only(cluster):
    listeners = _ray_listeners()
    assert listeners, "expected Ray's servers in ss -tlnp"
    for line in listeners:
        local = line.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")), line


def test_ray_actors_match_sequential(cluster, worker_case):
    from fedloom.sim.ray_executor import RayExecutor

    case = worker_case
    params, plans, context, expected = case.params, case.plans, case.context, case.expected
    with RayExecutor(case.module, case.data, case.local, num_workers=2) as executor:
        assert executor.inner_engines == ["VectorizedExecutor", "VectorizedExecutor"]
        got = executor.fit(plans, params, {}, context)
        with pytest.raises(FedloomError, match="a Ray worker failed during training"):
            wrong = torch.zeros(5)
            executor.fit([ClientPlan(0, 0, 1)], wrong, {}, LocalContext(wrong))
    assert ray.is_initialized()  # it joined the fixture's session and leaves it running
    for a, b in zip(expected, got, strict=True):
        assert (a.client_id, a.num_steps) == (b.client_id, b.num_steps)
        assert torch.allclose(a.update, b.update, atol=1e-6, rtol=0)


@pytest.mark.mnist
def test_ray_engine_equals_sequential_on_mnist_2nn(cluster, mnist):
    data = federate(mnist, Shards(100, 2), seed=0)
    local = LocalTraining(epochs=1, batch_size=10, lr=0.05)

    def final(engine):
        return fl.simulate(
            fl.fedavg(),
            data,
            fl.models.mnist_2nn,
            rounds=3,
            fraction=0.1,
            local=local,
            seed=1,
            engine=engine,
            workers=2,
            eval_clients=False,
        ).final_state.params

    start = flatten_params(initial_module(fl.models.mnist_2nn, seed=1))
    sequential, on_ray = final("sequential"), final("ray")
    # the tolerance of tests/sim/test_engines.py: Ray's actors run the vectorized engine
    assert float((on_ray - sequential).norm() / (sequential - start).norm()) < 1e-4
