"""FedAvg and FedSGD against independent references (McMahan et al. 2017)."""

import numpy as np
import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.client import LocalTraining, batch_schedule
from fedloom.data import federate, partition
from fedloom.engine import plans_for_round
from fedloom.params import flatten_params, load_flat
from fedloom.simulation import initial_module


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def _fedsgd_matches_centralized_gd(dataset, factory, num_clients, fraction, lr=0.1):
    data = federate(
        dataset,
        lambda ds, rng: partition.shards(
            ds.train_y.numpy(), num_clients, shards_per_client=2, rng=rng
        ),
        seed=3,
    )
    history = fl.simulate(
        fl.fedsgd(), data, factory, rounds=1, fraction=fraction, local=LocalTraining(lr=lr), seed=3
    )
    # Reference: one full-batch gradient step on the union of the participants' data,
    # computed with ordinary autograd on an ordinary module.
    module = initial_module(factory, seed=3)
    w0 = flatten_params(module)
    cohort = [p.client_id for p in plans_for_round(num_clients, fraction, seed=3, round=0)]
    union = torch.from_numpy(np.concatenate([data.client_train[k] for k in cohort]))
    loss = nn.functional.cross_entropy(module(dataset.train_x[union]), dataset.train_y[union])
    grads = torch.autograd.grad(loss, list(module.parameters()))
    step = -lr * torch.cat([g.reshape(-1) for g in grads])
    fed_step = history.final_state.params - w0
    return _relative_error(fed_step, step), len(cohort)


def test_fedsgd_round_equals_centralized_gradient_step_digits(digits):
    error, cohort = _fedsgd_matches_centralized_gd(digits, fl.models.digits_mlp, 20, 0.3)
    assert cohort == 6
    assert error < 1e-5


@pytest.mark.mnist
def test_fedsgd_round_equals_centralized_gradient_step_mnist_2nn(mnist):
    error, cohort = _fedsgd_matches_centralized_gd(mnist, fl.models.mnist_2nn, 100, 0.1)
    assert cohort == 10
    assert error < 1e-5


def test_fedavg_with_one_client_equals_plain_local_sgd(digits):
    """One client, C = 1, server_lr = 1: each round is exactly E epochs of torch.optim.SGD."""
    data = federate(digits, [np.arange(digits.num_train)], holdout_fraction=0.0, seed=0)
    settings = LocalTraining(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4)
    rounds = 2
    history = fl.simulate(
        fl.fedavg(), data, fl.models.digits_mlp, rounds=rounds, fraction=1.0, local=settings, seed=5
    )
    reference = initial_module(fl.models.digits_mlp, seed=5)
    x, y = data.client_data(0)
    for t in range(rounds):
        # FedAvg restarts the client's optimizer every round; so does this reference.
        optimizer = torch.optim.SGD(
            reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4
        )
        (plan,) = plans_for_round(1, 1.0, seed=5, round=t)
        for index in batch_schedule(len(y), settings, np.random.default_rng(plan.seed)):
            batch = torch.from_numpy(index)
            optimizer.zero_grad()
            nn.functional.cross_entropy(reference(x[batch]), y[batch]).backward()
            optimizer.step()
    expected = flatten_params(reference)
    assert torch.allclose(history.final_state.params, expected, atol=2e-6, rtol=0)


def _digits_run(digits, seed, **kwargs):
    data = federate(
        digits,
        lambda ds, rng: partition.dirichlet(ds.train_y.numpy(), 10, alpha=0.5, rng=rng),
        seed=seed,
    )
    return fl.simulate(
        fl.fedavg(),
        data,
        fl.models.digits_mlp,
        rounds=3,
        fraction=0.5,
        local=LocalTraining(epochs=1, batch_size=10, lr=0.1),
        seed=seed,
        **kwargs,
    )


def test_same_seed_gives_bit_identical_parameters(digits):
    a = _digits_run(digits, seed=11).final_state.params
    b = _digits_run(digits, seed=11).final_state.params
    c = _digits_run(digits, seed=12).final_state.params
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fedavg_learns_and_reports_metrics(digits):
    history = _digits_run(digits, seed=0)
    first, last = history.reports[0].metrics, history.reports[-1].metrics
    assert last["test_accuracy"] > 0.3  # chance is 0.1; three short rounds
    assert last["test_loss"] < first["test_loss"]
    assert last["num_clients"] == 5
    # bytes: 5 clients x 4,810 float32 values, each way
    assert last["bytes_down"] == last["bytes_up"] == 5 * 4810 * 4
    for key in (
        "client_accuracy_mean",
        "client_accuracy_std",
        "client_accuracy_worst10",
        "client_accuracy_best10",
        "train_loss",
        "examples_processed",
        "wall_s",
    ):
        assert key in last
    assert (
        last["client_accuracy_worst10"]
        <= last["client_accuracy_mean"]
        <= last["client_accuracy_best10"]
    )


def _bn_model():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10)
    )


def test_batch_norm_buffers_averaged_or_kept_local(digits):
    data = federate(digits, lambda ds, rng: partition.iid(ds.num_train, 6, rng=rng), seed=0)
    settings = LocalTraining(epochs=1, batch_size=32, lr=0.1)
    averaged = fl.simulate(fl.fedavg(), data, _bn_model, rounds=2, fraction=0.5, local=settings)
    local = fl.simulate(
        fl.fedavg(), data, _bn_model, rounds=2, fraction=0.5, local=settings, buffers="local"
    )
    initial = torch.cat([torch.zeros(16), torch.ones(16)])  # running mean 0, var 1
    assert not torch.allclose(averaged.final_state.buffers, initial)
    assert torch.equal(local.final_state.buffers, initial)  # the server never saw client stats
    assert local.reports[-1].metrics["test_accuracy"] > 0.2
    # Averaged statistics are what clients computed: running variances stay positive.
    assert bool((averaged.final_state.buffers[16:] > 0).all())


def test_model_instance_starts_from_its_own_weights(digits):
    data = federate(digits, lambda ds, rng: partition.iid(ds.num_train, 4, rng=rng))
    module = fl.models.digits_mlp()
    load_flat(module, torch.zeros(4810))
    history = fl.simulate(
        fl.fedavg(), data, module, rounds=1, fraction=0.25, local=LocalTraining(steps=1)
    )
    # From all-zero weights, one SGD step only moves the last layer's bias
    # (every other gradient is multiplied by a zero weight or a zero activation).
    moved = history.final_state.params.nonzero().flatten()
    assert moved.min() >= 4810 - 10
