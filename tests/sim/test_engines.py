"""Every engine produces the sequential engine's results.

Tolerance: after 3 rounds of FedAvg, ||w_vectorized - w_sequential|| must be at most 1e-4 of
the distance the sequential run moved, ||w_sequential - w_0|| (float32 arithmetic in a
different order; measured 1e-7 to 6e-7 on an Intel Xeon, up to 3.7e-5 on an AMD EPYC, whose
batched-matmul kernels sum MNIST's 784 inputs in another order over 54 steps and 3 rounds).
A wrong gradient, step or weight moves it by 1e-2 or more.
"""

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import Dirichlet, QuantitySkew, Shards, federate
from fedloom.engine import plans_for_round
from fedloom.params import flatten_params
from fedloom.sim import IsolatedExecutor, SequentialExecutor, VectorizedExecutor, make_executor
from fedloom.sim.vectorized import default_slots, vectorization_problem
from fedloom.simulation import initial_module

RELATIVE_TOLERANCE = 1e-4


def _final(engine, data, model, local, fraction, rounds=3):
    history = fl.simulate(
        fl.fedavg(),
        data,
        model,
        rounds=rounds,
        fraction=fraction,
        local=local,
        seed=1,
        engine=engine,
        eval_clients=False,
    )
    return history.final_state.params


def _relative_drift(data, model, local, fraction, rounds=3, engine="vectorized"):
    start = flatten_params(initial_module(model, seed=1))
    sequential = _final("sequential", data, model, local, fraction, rounds)
    other = _final(engine, data, model, local, fraction, rounds)
    return float((other - sequential).norm() / (sequential - start).norm())


def test_vectorized_equals_sequential_with_unequal_clients_momentum_and_decay(digits):
    # Power-law sizes: clients take 2 to 30+ steps, last batches are partial.
    data = federate(digits, QuantitySkew(20, sigma=1.0, min_size=10), seed=2)
    local = LocalTraining(epochs=2, batch_size=10, lr=0.1, momentum=0.9, weight_decay=1e-3)
    assert _relative_drift(data, fl.models.digits_mlp, local, 0.5) < RELATIVE_TOLERANCE


def test_vectorized_equals_sequential_on_a_cnn_with_full_batches(digits):
    data = federate(digits, Dirichlet(20, 0.5), seed=0)
    local = LocalTraining(epochs=1, batch_size=None, lr=0.3)  # FedSGD-like full batches
    assert _relative_drift(data, fl.models.digits_cnn, local, 0.5) < RELATIVE_TOLERANCE


@pytest.mark.mnist
@pytest.mark.parametrize("engine", ["vectorized", "process"])
def test_engines_equal_sequential_on_mnist_2nn(mnist, engine):
    data = federate(mnist, Shards(100, 2), seed=0)
    local = LocalTraining(epochs=1, batch_size=10, lr=0.05)  # 54 local steps per client
    drift = _relative_drift(data, fl.models.mnist_2nn, local, 0.1, engine=engine)
    assert drift < RELATIVE_TOLERANCE


@pytest.mark.mnist
def test_vectorized_equals_sequential_on_mnist_cnn_one_step(mnist):
    """One local step per client: the vmapped CNN gradient is each client's own gradient.

    Known gap (issue 3): over many steps the ReLU CNN's float32 trajectories separate (0.8%
    after 3 rounds x 3 steps). This is the problem's conditioning, not an engine error: on
    these shards the sequential engine started one ulp away from itself already drifts 0.06%
    after the same 9 steps, and the grouped convolution vmap uses rounds a few ulps
    differently at every step. With tanh, the same network agrees to 1e-6 after 3 rounds x
    20 steps.
    """
    data = federate(mnist, Shards(100, 2), seed=0)
    local = LocalTraining(steps=1, batch_size=10, lr=0.05)
    assert _relative_drift(data, fl.models.mnist_cnn, local, 0.05, rounds=1) < RELATIVE_TOLERANCE


def test_slot_count_does_not_change_results(digits):
    """Continuous batching: refilled and dropped slots give each client its own trajectory."""
    data = federate(digits, QuantitySkew(12, sigma=1.5, min_size=5), seed=3)
    module = fl.models.digits_mlp()
    params = flatten_params(module)
    local = LocalTraining(epochs=1, batch_size=8, lr=0.1, momentum=0.5)
    plans = plans_for_round(12, 1.0, seed=0, round=0)
    context = LocalContext(params)
    sequential = SequentialExecutor(module, data, local).fit(
        plans, params, {p.client_id: torch.zeros(0) for p in plans}, context
    )
    steps = sorted(r.num_steps for r in sequential)
    assert steps[-1] > 3 * steps[0]  # genuinely unequal
    for slots in (1, 3, 12):
        vectorized = VectorizedExecutor(module, data, local, slots=slots).fit(
            plans, params, {}, context
        )
        for a, b in zip(sequential, vectorized, strict=True):
            assert (a.client_id, a.num_steps, a.num_example_passes) == (
                b.client_id,
                b.num_steps,
                b.num_example_passes,
            )
            assert torch.allclose(a.update, b.update, atol=1e-6, rtol=0)
            assert abs(a.train_loss - b.train_loss) < 1e-5


def _bn_model():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)
    )


def test_batch_norm_falls_back_to_sequential_and_says_so(digits, caplog):
    assert "running_mean" in vectorization_problem(_bn_model())
    assert vectorization_problem(fl.models.mnist_cnn()) is None
    data = federate(digits, Dirichlet(6, 1.0))
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        executor = make_executor("vectorized", _bn_model(), data, LocalTraining())
    assert isinstance(executor, SequentialExecutor)
    assert "cannot train this model" in caplog.text and "using sequential" in caplog.text
    with pytest.raises(ValueError, match="cannot vectorize"):
        VectorizedExecutor(_bn_model(), data, LocalTraining())
    local = LocalTraining(epochs=1, batch_size=16)
    a = _final("vectorized", data, _bn_model, local, 0.5, rounds=2)
    b = _final("sequential", data, _bn_model, local, 0.5, rounds=2)
    assert torch.equal(a, b)  # the fallback is the sequential engine itself


def test_auto_picks_vectorized_where_possible(digits):
    data = federate(digits, Dirichlet(6, 1.0))
    executor = make_executor("auto", fl.models.digits_mlp(), data, LocalTraining())
    assert isinstance(executor, IsolatedExecutor)  # a failing client fails alone
    assert isinstance(executor.cohort, VectorizedExecutor)
    with pytest.raises(ValueError, match="unknown engine"):
        make_executor("warp", fl.models.digits_mlp(), data, LocalTraining())


def test_default_slots_follow_cache_and_memory():
    # 2NN: 16 MiB of cached parameters / (4 bytes x 199,210) = 21 clients
    assert default_slots(199_210, 1_000, 10) == 21
    # the McMahan CNN: 2 clients fit the cache target
    assert default_slots(1_663_370, 50_000, 10) == 2
    # a tight memory budget wins
    assert default_slots(199_210, 1_000, 10, memory_budget_bytes=10 * 4 * 199_210) <= 3
    assert default_slots(10**9, 1, 1) == 1
    assert np.isfinite(default_slots(10, 1, 1))


@pytest.mark.mnist
def test_vectorized_mnist_cnn_after_3_rounds_is_within_float32_rounding_spread(mnist):
    """The CNN over 3 rounds x 3 steps: a tolerance set by the problem's own rounding.

    A fixed relative tolerance cannot hold here (see the one-step test): the ReLU CNN on
    label-pure shards amplifies rounding. So "float32 tolerance" is measured: the distance
    between two *sequential* runs whose initial weights differ by one ulp. The vectorized
    engine must stay within 30 times that spread (it perturbs every step, not only the
    start; measured 12.8x: 0.76% vs 0.059% of the distance moved) and within 2% of it.
    """
    data = federate(mnist, Shards(100, 2), seed=0)
    local = LocalTraining(steps=3, batch_size=10, lr=0.05)
    start = flatten_params(initial_module(fl.models.mnist_cnn, seed=1))
    nudged_module = initial_module(fl.models.mnist_cnn, seed=1)
    with torch.no_grad():
        for p in nudged_module.parameters():
            p.copy_(torch.nextafter(p, torch.full_like(p, math.inf)))
    sequential = _final("sequential", data, fl.models.mnist_cnn, local, 0.05)
    nudged = _final("sequential", data, nudged_module, local, 0.05)
    vectorized = _final("vectorized", data, fl.models.mnist_cnn, local, 0.05)
    moved = float((sequential - start).norm())
    rounding_spread = float((nudged - sequential).norm())
    engine_gap = float((vectorized - sequential).norm())
    assert 0 < rounding_spread < 0.01 * moved
    assert engine_gap <= 30 * rounding_spread
    assert engine_gap <= 0.02 * moved
