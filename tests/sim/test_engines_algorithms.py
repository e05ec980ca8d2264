"""Every algorithm of the drift issue gives the same results on every engine.

Same tolerance as ``test_engines.py``: after 3 rounds the vectorized (or process) engine's
parameters are within 1e-5 of the distance the sequential run moved. Client statistics
(initial loss, update variance, work norm) are compared per client to 1e-4 relative.
"""

import pytest
import torch

import fedloom as fl
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import QuantitySkew, federate
from fedloom.engine import LocalWork, assign_work, plans_for_round
from fedloom.params import flatten_params
from fedloom.sim import SequentialExecutor, VectorizedExecutor
from fedloom.simulation import initial_module

RELATIVE_TOLERANCE = 1e-5

ALGORITHMS = {
    "fedprox": lambda: fl.fedprox(0.5),
    "scaffold": lambda: fl.scaffold(),
    "fednova": lambda: fl.fednova(),
    "fedadam": lambda: fl.fedadam(server_lr=0.01),
    "qffl": lambda: fl.qffl(1.0),
    "inverse_variance": lambda: fl.fedavg(weighting="inverse_variance"),
}


@pytest.fixture(scope="module")
def skewed(digits):
    return federate(digits, QuantitySkew(16, sigma=1.0, min_size=12), seed=2)


def _final(algorithm, data, engine, *, local, work=None):
    history = fl.simulate(
        algorithm,
        data,
        fl.models.digits_mlp,
        rounds=3,
        fraction=0.5,
        local=local,
        work=work,
        seed=1,
        engine=engine,
        eval_clients=False,
    )
    return history.final_state


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_vectorized_equals_sequential_for_every_algorithm(name, skewed):
    local = LocalTraining(epochs=2, batch_size=10, lr=0.1, momentum=0.0, weight_decay=1e-4)
    work = LocalWork(low=1, high=3, straggler_fraction=0.5)  # unequal work too
    start = flatten_params(initial_module(fl.models.digits_mlp, seed=1))
    sequential = _final(ALGORITHMS[name](), skewed, "sequential", local=local, work=work)
    vectorized = _final(ALGORITHMS[name](), skewed, "vectorized", local=local, work=work)
    moved = float((sequential.params - start).norm())
    assert moved > 0.1
    assert float((vectorized.params - sequential.params).norm()) / moved < RELATIVE_TOLERANCE
    if name == "scaffold":
        assert set(vectorized.clients) == set(sequential.clients)
        for k, entries in sequential.clients.items():
            c = entries["scaffold/c"]
            assert torch.allclose(vectorized.clients[k]["scaffold/c"], c, rtol=1e-4, atol=1e-5)


def test_client_statistics_agree_between_engines(skewed):
    local = LocalTraining(epochs=2, batch_size=10, lr=0.1, momentum=0.5)
    program = fl.client.ClientProgram(
        terms=(), statistics=frozenset({"initial_loss", "update_variance", "work_norm"})
    )
    module = initial_module(fl.models.digits_mlp, seed=1)
    params = flatten_params(module)
    plans = plans_for_round(skewed.num_clients, 0.5, seed=1, round=0)
    plans, _ = assign_work(plans, LocalWork(low=1, high=3), local, seed=1)
    buffers = {p.client_id: torch.zeros(0) for p in plans}
    context = LocalContext(params)
    sequential = SequentialExecutor(module, skewed, local, program=program)
    vectorized = VectorizedExecutor(module, skewed, local, program=program, slots=3)
    expected = sequential.fit(plans, params, buffers, context)
    actual = vectorized.fit(plans, params, buffers, context)
    for e, a in zip(expected, actual, strict=True):
        assert set(a.statistics) == {"initial_loss", "update_variance", "work_norm"}
        for key, value in e.statistics.items():
            assert a.statistics[key] == pytest.approx(value, rel=1e-4), key
        assert e.statistics["initial_loss"] > 1.0  # an untrained 10-class model: about ln 10
        assert e.statistics["update_variance"] > 0
        rho, tau = 0.5, e.num_steps
        assert e.statistics["work_norm"] == pytest.approx(
            (tau - rho * (1 - rho**tau) / (1 - rho)) / (1 - rho)
        )


def test_process_engine_runs_scaffold_and_fedprox_like_sequential(unequal_digits):
    local = LocalTraining(epochs=1, batch_size=10, lr=0.1)
    for algorithm in (fl.scaffold(), fl.fedprox(1.0)):
        start = flatten_params(initial_module(fl.models.digits_mlp, seed=1))
        sequential = _final(algorithm, unequal_digits, "sequential", local=local)
        process = _final(algorithm, unequal_digits, "process", local=local)
        moved = float((sequential.params - start).norm())
        assert float((process.params - sequential.params).norm()) / moved < RELATIVE_TOLERANCE
