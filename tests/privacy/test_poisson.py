"""Poisson sampling in the round loop, as DP-FedAvg's accountant assumes it: an empty cohort
is a real round (the noise alone with DP, nothing without), the epsilon reported is
dp-accounting's for Poisson sampling at q = server.fraction, a resumed run continues its
ledger, and the ledger refuses rounds sampled otherwise."""

import dp_accounting as dpa
import pytest
import torch
from dp_accounting import pld, rdp

from fedloom.aggregate import RoundInfo, aggregate_stack
from fedloom.config import build_run, load_config
from fedloom.data.sampling import sample_cohort
from fedloom.engine import Callback, Checkpoints
from fedloom.errors import ConfigError, FedloomError
from fedloom.experiment import simulate_config
from fedloom.params import flatten_params
from fedloom.privacy.dp_fedavg import GaussianSumNoise, dp_fedavg

S, Z, DELTA = 0.5, 0.8, 1e-4
DP = f"algorithm={{name: dp_fedavg, clip_norm: {S}, noise_multiplier: {Z}, delta: {DELTA}}}"


def _config(num_clients, fraction, rounds, *extra, seed=0):
    return load_config(None, [
        f"seed={seed}", f"rounds={rounds}", f"data.num_clients={num_clients}",
        "model.name=digits_mlp", "client.epochs=1", "engine=sequential", "eval.clients=false",
        f"server.fraction={fraction}", "server.sampling=poisson", *extra,
    ])  # fmt: skip


class Params(Callback):
    """The global params after each round."""

    def __init__(self):
        self.after = []

    def on_round(self, report, state):
        self.after.append(state.params.clone())


def _sizes(num_clients, fraction, rounds, seed=0):
    return [
        len(sample_cohort(num_clients, fraction, seed=seed, round=t, sampling="poisson"))
        for t in range(rounds)
    ]


def test_an_empty_cohort_with_dp_moves_the_model_by_exactly_the_noise_over_q_n():
    config = _config(10, 0.1, 1, DP)  # seed 0: nobody is sampled in round 1
    assert _sizes(10, 0.1, 1) == [0]
    spec = build_run(config)
    before = flatten_params(spec.module).clone()
    history = simulate_config(config, spec=spec)
    # the noise the stage draws: N(0, (z S)^2) per coordinate from the round's own stream,
    # added to the empty sum (zero) and divided by the expected cohort q N = 1
    noise = torch.randn(
        before.shape, generator=RoundInfo(seed=0, round=0).generator("dp_noise"),
        dtype=torch.float64,
    )  # fmt: skip
    step = ((torch.zeros_like(noise) + Z * S * noise) / (0.1 * 10)).to(torch.float32)
    assert torch.equal(history.final_state.params, before + step)
    metrics = history.reports[0].metrics
    assert metrics["num_clients"] == metrics["num_results"] == 0.0
    assert "round_skipped" not in metrics and "train_loss" not in metrics  # no fake loss
    ledger = history.final_state.aggregation["server"][0]
    assert ledger == {"rounds": 1, "population": 10, "sampling": "poisson", "cohort": 1.0,
                      "rate": 0.1}  # fmt: skip
    assert metrics["dp_epsilon"] > 0


def test_an_empty_cohort_without_dp_is_reported_and_leaves_the_model_unchanged(caplog):
    config = _config(10, 0.1, 3)  # fedavg; seed 0: rounds 1 and 2 are empty, round 3 not
    assert _sizes(10, 0.1, 3) == [0, 0, 3]
    spec = build_run(config)
    before = flatten_params(spec.module).clone()
    params = Params()
    with caplog.at_level("WARNING", logger="fedloom"):
        history = simulate_config(config, spec=spec, callbacks=[params])
    first, second, third = (r.metrics for r in history.reports)
    assert first["round_skipped"] == second["round_skipped"] == 1.0
    assert first["num_clients"] == 0.0 and "train_loss" not in first
    assert "round 1: no client was sampled (poisson sampling, q = 0.1)" in caplog.text
    assert torch.equal(params.after[0], before) and torch.equal(params.after[1], before)
    assert third["num_clients"] == third["num_results"] == 3.0 and "round_skipped" not in third
    assert not torch.equal(params.after[2], before)
    assert history.final_state.round == 3


@pytest.mark.parametrize(
    ("accountant", "make"), [("rdp", rdp.RdpAccountant), ("pld", pld.PLDAccountant)]
)
def test_a_poisson_run_reports_dp_accountings_epsilon_for_poisson_sampling(accountant, make):
    q, rounds = 0.3, 4
    config = _config(10, q, rounds, DP, f"algorithm.accountant={accountant}")
    history = simulate_config(config)
    sizes = [r.metrics["num_clients"] for r in history.reports]
    assert sizes == _sizes(10, q, rounds) == [0, 1, 6, 1]  # the cohort size varies
    for t, report in enumerate(history.reports, start=1):
        reference = make()  # computed here, independently of fedloom's accountant module
        reference.compose(
            dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(Z)), t)
        )
        assert report.metrics["dp_epsilon"] == pytest.approx(
            reference.get_epsilon(DELTA), rel=1e-12
        )


def test_a_resumed_poisson_run_continues_its_ledger(tmp_path):
    config = _config(10, 0.3, 4, DP)
    uninterrupted = simulate_config(config)
    checkpoint = Checkpoints(tmp_path, fingerprint="poisson")
    simulate_config(_config(10, 0.3, 2, DP), checkpoint=checkpoint)
    resumed = simulate_config(config, checkpoint=checkpoint)
    ledger = resumed.final_state.aggregation["server"][0]
    assert (ledger["rounds"], ledger["sampling"], ledger["rate"]) == (4, "poisson", 0.3)
    assert [r.metrics["dp_epsilon"] for r in resumed.reports] == [
        r.metrics["dp_epsilon"] for r in uninterrupted.reports
    ]
    assert torch.equal(resumed.final_state.params, uninterrupted.final_state.params)


def test_the_ledger_refuses_a_round_sampled_otherwise_than_its_rounds():
    stage = GaussianSumNoise(S, Z, DELTA)
    uniform = {"rounds": 3, "population": 10, "cohort": 3}  # a ledger written before Poisson
    poisson = RoundInfo(num_clients=10, sampling="poisson", sampling_rate=0.3)
    with pytest.raises(FedloomError, match="holds 3 rounds of uniform sampling of 3 of 10"):
        stage.update(torch.zeros(2), uniform, cohort=None, params=torch.zeros(2), info=poisson)
    same = RoundInfo(num_clients=10, cohort_size=3)  # the old ledger continues as uniform
    _, spent = stage.update(torch.zeros(2), uniform, cohort=None, params=torch.zeros(2), info=same)
    assert spent == {"rounds": 4, "population": 10, "sampling": "uniform", "cohort": 3,
                     "rate": 0.3}  # fmt: skip


def test_the_fixed_denominator_with_poisson_sampling_is_q_n_not_rounded():
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # clipped to (0.6, 0.8) and (0.3, 0.4)
    step, _ = aggregate_stack(
        dp_fedavg(1.0, 0.0).aggregation, updates, torch.ones(2),
        info=RoundInfo(num_clients=10, sampling="poisson", sampling_rate=0.25),
    )  # fmt: skip
    assert step.tolist() == pytest.approx([0.9 / 2.5, 1.2 / 2.5])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["server.sampling=bernoulli"],
         "server.sampling: Input should be 'uniform' or 'poisson' (got 'bernoulli')"),
        ([DP, "algorithm.accountant=pld", "server.sampling=uniform"],
         "algorithm.accountant: pld accounts only for Poisson sampling"),
        ([DP, "server.validation.min_updates=2"],
         "server.validation.min_updates: dp_fedavg releases its aggregate every round"),
    ],
)  # fmt: skip
def test_bad_sampling_settings_are_config_errors_naming_the_field(overrides, message, tmp_path,
                                                                 capsys):  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        build_run(load_config(None, ["data.num_clients=10", *overrides]))
    assert message in str(caught.value)
    from fedloom.cli import main

    argv = ["run", "--runs-dir", str(tmp_path), "--no-progress", "--set", "data.num_clients=10"]
    for setting in overrides:
        argv += ["--set", setting]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_budget_is_calibrated_for_the_poisson_sampling_that_runs():
    config = _config(
        10, 0.3, 4, DP, "algorithm.noise_multiplier=null", "algorithm.max_epsilon=8.0"
    )  # fmt: skip
    history = simulate_config(config)
    assert len(history.reports) == 4
    assert 8.0 * 0.99 < history.reports[-1].metrics["dp_epsilon"] <= 8.0
