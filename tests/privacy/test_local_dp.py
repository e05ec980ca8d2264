"""Local DP: every update a client sends is clipped and carries noise of std z * S drawn from
its own stream; the server only averages; the engines agree; each client's local epsilon is
dp-accounting's for the rounds it took part in; bad combinations are config errors."""

import math
from collections import Counter
from functools import cache

import dp_accounting as dpa
import pytest
import torch
from dp_accounting import pld

import fedloom as fl
from fedloom.algorithms import server_init, server_update
from fedloom.client import ClientProgram, LocalContext, LocalTraining
from fedloom.config import build_algorithm, load_config
from fedloom.engine import Checkpoints, plans_for_round
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.params import flatten_params
from fedloom.privacy.dp_fedavg import dp_fedavg
from fedloom.privacy.local_dp import LocalGaussian, local_epsilons
from fedloom.sim import SequentialExecutor
from fedloom.simulation import initial_module

S, Z = 0.5, 1.0


@cache
def _local_epsilon(z, rounds, delta):
    """dp-accounting by hand: the composition of ``rounds`` Gaussian mechanisms of
    sensitivity 2 S and noise z S, with the PLD accountant (fedloom uses the exact analytic
    Gaussian; the PLD's discretization adds about 1e-9 relative)."""
    accountant = pld.PLDAccountant()
    accountant.compose(dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z / 2), rounds))
    return accountant.get_epsilon(delta)


def _clipped(update, clip_norm):
    exact = update.double()
    return exact * min(1.0, clip_norm / float(exact.norm()))


def test_every_sent_update_is_clipped_and_noised_with_std_z_s(unequal_digits):
    clip_norm = 0.25  # below every client's update norm (0.52 to 12.6)
    module = initial_module(fl.models.digits_mlp, seed=1)
    params = flatten_params(module)
    local = LocalTraining(epochs=2, batch_size=10, lr=0.1, momentum=0.9, weight_decay=1e-3)
    plans = plans_for_round(12, 1.0, seed=0, round=0)
    context, buffers = LocalContext(params), {p.client_id: torch.zeros(0) for p in plans}
    algorithm = dp_fedavg(clip_norm, Z, local_dp=True)
    assert algorithm.client_program().update_transforms == (LocalGaussian(clip_norm, Z),)
    raw = SequentialExecutor(module, unequal_digits, local).fit(plans, params, buffers, context)
    program = algorithm.client_program()
    sent = SequentialExecutor(module, unequal_digits, local, program=program).fit(
        plans, params, buffers, context
    )
    noises = []
    for before, after in zip(raw, sent, strict=True):
        assert float(before.update.norm()) > clip_norm  # clipping matters for every client
        noise = after.update.double() - _clipped(before.update, clip_norm)
        # P = 4,810 draws: the sample std is within 5% of sigma (5 standard errors of 1%)
        assert float(noise.std()) == pytest.approx(Z * clip_norm, rel=0.05)
        assert abs(float(noise.mean())) < 5 * Z * clip_norm / math.sqrt(noise.numel())
        noises.append(noise)
    pooled = torch.stack(noises)  # 57,720 draws: within 1.5% (5 standard errors of 0.3%)
    assert float(pooled.std()) == pytest.approx(Z * clip_norm, rel=0.015)
    correlation = torch.corrcoef(pooled)  # every client draws from its own stream
    off_diagonal = correlation[~torch.eye(len(noises), dtype=torch.bool)]
    assert float(off_diagonal.abs().max()) < 5 / math.sqrt(pooled.shape[1])

    # the server only averages: the step is the mean of the noised updates as they arrived
    state = server_init(algorithm, params, torch.zeros(0))
    after = server_update(algorithm, state, sent, num_clients=12, cohort_size=12)
    mean = torch.stack([r.update.double() for r in sent]).mean(0)
    assert torch.allclose((after.params - params).double(), mean, atol=1e-6, rtol=0)
    assert after.aggregation["per_client"][0] == {p.client_id: 1 for p in plans}


def test_the_noise_is_the_clients_own_stream_and_the_clip_bounds_the_norm():
    transform = LocalGaussian(2.0, 0.0)  # no noise: clipping alone
    big = torch.full((100,), 1.0)  # norm 10
    assert float(transform(big, seed=1).double().norm()) == pytest.approx(2.0, rel=1e-6)
    assert torch.equal(transform(big * 0.1, seed=1), big * 0.1)  # norm 1: untouched
    noisy = LocalGaussian(2.0, 1.0)
    zero = torch.zeros(100)
    assert torch.equal(noisy(zero, seed=7), noisy(zero, seed=7))  # a pure function of the seed
    assert not torch.equal(noisy(zero, seed=7), noisy(zero, seed=8))


def test_the_sequential_and_vectorized_engines_agree(unequal_digits):
    local = LocalTraining(epochs=2, batch_size=10, lr=0.1)
    start = flatten_params(initial_module(fl.models.digits_mlp, seed=1))
    finals = {}
    for engine in ("sequential", "vectorized"):
        history = fl.simulate(
            dp_fedavg(S, Z, local_dp=True), unequal_digits, fl.models.digits_mlp, rounds=3,
            fraction=0.5, local=local, seed=1, engine=engine, eval_clients=False,
        )  # fmt: skip
        finals[engine] = history.final_state
    sequential, vectorized = finals["sequential"], finals["vectorized"]
    moved = float((sequential.params - start).norm())
    assert moved > 0.1
    assert float((vectorized.params - sequential.params).norm()) / moved < 1e-5
    assert vectorized.aggregation == sequential.aggregation  # the same ledger


SHORT = ["rounds=4", "data.num_clients=10", "model.name=digits_mlp", "client.epochs=1",
         "engine=sequential", "eval.clients=false", "server.fraction=0.5",
         f"algorithm={{name: dp_fedavg, clip_norm: {S}, noise_multiplier: {Z}, delta: 1e-4, "
         "local_dp: true}"]  # fmt: skip


def test_each_clients_local_epsilon_counts_only_the_rounds_it_took_part_in():
    config = load_config(None, SHORT)
    history = simulate_config(config)
    taken = Counter()
    for t, report in enumerate(history.reports):
        taken.update(p.client_id for p in plans_for_round(10, 0.5, seed=config.seed, round=t))
        worst = max(taken.values())
        assert report.metrics["dp_local_epsilon"] == pytest.approx(
            _local_epsilon(Z, worst, 1e-4), rel=1e-6
        )
        assert "dp_epsilon" not in report.metrics  # no central guarantee is claimed
    counts = history.final_state.aggregation["per_client"][0]
    assert counts == dict(taken) and set(counts.values()) != {4}  # sampling: unequal counts
    for client, value in local_epsilons(counts, Z, 1e-4).items():
        assert value == pytest.approx(_local_epsilon(Z, taken[client], 1e-4), rel=1e-6)


def test_a_resumed_run_keeps_the_local_ledger(tmp_path):
    uninterrupted = simulate_config(load_config(None, SHORT))
    checkpoint = Checkpoints(tmp_path, fingerprint="local")
    simulate_config(load_config(None, [*SHORT, "rounds=2"]), checkpoint=checkpoint)
    resumed = simulate_config(load_config(None, SHORT), checkpoint=checkpoint)
    assert resumed.final_state.aggregation == uninterrupted.final_state.aggregation
    assert torch.equal(resumed.final_state.params, uninterrupted.final_state.params)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("target_quantile: 0.5", "algorithm.target_quantile: adaptive clipping needs"),
        ("max_epsilon: 5", "algorithm.max_epsilon: with local_dp every client"),
    ],
)
def test_options_local_dp_cannot_honour_are_config_errors(option, message):
    config = load_config(None, [f"algorithm={{name: dp_fedavg, local_dp: true, {option}}}"])
    with pytest.raises(ConfigError, match=message):
        build_algorithm(config)


def test_a_program_without_transforms_sends_the_update_as_trained():
    assert torch.equal(ClientProgram().transform_update(torch.ones(3), seed=0), torch.ones(3))
