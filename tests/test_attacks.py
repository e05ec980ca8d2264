"""Simulated attacks: who attacks, what they send, and what it does to the mean vs robust rules."""

import statistics

import numpy as np
import pytest
import torch

import fedloom as fl
from fedloom.aggregate import CoordinateMedian, GeometricMedian, TrimmedMean
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import IID, federate
from fedloom.engine import plans_for_round
from fedloom.params import flatten_params
from fedloom.sim import SequentialExecutor
from fedloom.sim.attacks import (
    Attack,
    AttackedExecutor,
    alie_z,
    choose_attackers,
    flip_labels,
    poison_updates,
)


def test_attackers_are_a_fixed_exact_fraction():
    chosen = choose_attackers(100, 0.2, seed=3)
    assert len(chosen) == 20 and chosen == choose_attackers(100, 0.2, seed=3)
    assert chosen != choose_attackers(100, 0.2, seed=4)
    assert choose_attackers(100, 0.0, seed=3) == frozenset()


def test_label_flip_changes_only_the_attackers_training_labels(digits):
    data = federate(digits, IID(10), seed=0)
    flipped = flip_labels(data, frozenset({2, 5}), 10)
    before, after = data.dataset.train_y, flipped.dataset.train_y
    for k in range(10):
        train = torch.from_numpy(data.client_train[k])
        holdout = torch.from_numpy(data.client_holdout[k])
        expected = 9 - before[train] if k in (2, 5) else before[train]
        assert torch.equal(after[train], expected)
        assert torch.equal(after[holdout], before[holdout])
    assert torch.equal(data.dataset.train_y, before)  # the original is untouched


def test_alie_z_follows_the_paper():
    # n = 50, f = 12: s = floor(26) - 12 = 14, z = Phi^-1(36 / 50) = 0.5828
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    assert alie_z(10, 2) == pytest.approx(statistics.NormalDist().inv_cdf(0.6))


def test_poisoned_updates_by_hand():
    own = torch.tensor([[1.0, -2.0], [0.5, 0.5]])
    honest = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 1.0]])
    generator = torch.Generator().manual_seed(0)

    def poison(kind, **kw):
        return poison_updates(
            Attack(kind, 0.2, **kw), own, honest, num_participants=5, generator=generator
        )

    assert torch.equal(poison("scaling", factor=100.0), own * 100)
    assert torch.equal(poison("sign_flip"), -own)
    mean, std = torch.tensor([2.0, 1.0]), torch.full((2,), (2 / 3) ** 0.5)
    alie = poison("alie", z=1.5)
    assert torch.allclose(alie, (mean - 1.5 * std).expand(2, -1))
    assert torch.allclose(poison("ipm", epsilon=0.5), torch.tensor([[-1.0, -0.5]] * 2))
    noise = poison_updates(
        Attack("gaussian", 0.2, sigma=2.0),
        torch.zeros(2, 20_000),
        honest,
        num_participants=5,
        generator=generator,
    )
    assert noise.std().item() == pytest.approx(2.0, rel=0.02)


def test_attacked_executor_replaces_only_the_attackers_results(digits):
    data = federate(digits, IID(6), seed=0)
    module = fl.models.digits_mlp()
    inner = SequentialExecutor(module, data, LocalTraining(epochs=1))
    params = flatten_params(module)
    plans = plans_for_round(6, 1.0, seed=0, round=0)
    buffers = {k: torch.zeros(0) for k in range(6)}
    clean = inner.fit(plans, params, buffers, LocalContext(params))
    attacked = AttackedExecutor(inner, Attack("scaling", 1 / 3), frozenset({1, 4}), seed=0)
    dirty = attacked.fit(plans, params, buffers, LocalContext(params))
    for c, d in zip(clean, dirty, strict=True):
        factor = 100.0 if c.client_id in (1, 4) else 1.0
        assert torch.allclose(d.update, c.update * factor)


def _accuracy(data, algorithm, attack):
    history = fl.simulate(
        algorithm,
        data,
        fl.models.digits_mlp,
        rounds=10,
        fraction=1.0,
        local=LocalTraining(epochs=2, batch_size=10, lr=0.1),
        attack=attack,
        eval_clients=False,
    )
    return history.reports[-1].metrics["test_accuracy"]


@pytest.fixture(scope="module")
def twenty(digits):
    return federate(digits, IID(20), seed=0)


def test_scaling_attack_breaks_the_mean_but_not_robust_rules(twenty):
    clean = _accuracy(twenty, fl.fedavg(), None)
    attack = Attack("scaling", 0.1, factor=100.0)
    assert clean > 0.85
    assert _accuracy(twenty, fl.fedavg(), attack) < 0.5
    for rule in (CoordinateMedian(), TrimmedMean(0.2), GeometricMedian()):
        assert _accuracy(twenty, fl.fedavg().with_aggregator(rule), attack) > clean - 0.1, rule


def test_label_flip_on_a_fifth_of_the_clients_costs_the_mean_accuracy(twenty):
    clean = _accuracy(twenty, fl.fedavg(), None)
    flipped = _accuracy(twenty, fl.fedavg(), Attack("label_flip", 0.4))
    assert flipped < clean - 0.05
    assert np.isfinite(flipped)
