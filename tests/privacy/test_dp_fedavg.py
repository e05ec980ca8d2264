"""DP-FedAvg: every update reaching the sum is within the clip norm, the noise has the
standard deviation the accountant assumes, the reported epsilon is the accountant's for the
rounds that ran, and a resumed run keeps its ledger."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.aggregate import Contribution, RoundInfo, aggregate_stack
from fedloom.aggregate.clip import Clip
from fedloom.config import load_config
from fedloom.engine import Checkpoints
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.privacy import PrivacySetting, epsilon
from fedloom.privacy.dp_fedavg import dp_fedavg


@settings(max_examples=200, deadline=None)
@given(
    norm=st.floats(1e-6, 1e6),
    clip_norm=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
    size=st.integers(1, 50),
)
def test_every_update_reaching_the_sum_is_within_the_clip_norm(norm, clip_norm, seed, size):
    direction = torch.randn(size, generator=torch.Generator().manual_seed(seed))
    update = (direction / direction.norm() * norm).to(torch.float32)
    clipped = Clip(clip_norm).update(Contribution(update, 1.0, 0, 1, 1), (), info=RoundInfo())
    assert float(clipped.update.double().norm()) <= clip_norm * (1 + 1e-6)


def test_the_noise_has_the_standard_deviation_z_s_over_m():
    clip_norm, z, m, num_params = 2.0, 1.5, 8, 200_000
    algorithm = dp_fedavg(clip_norm, z)
    zeros = torch.zeros(m, num_params)  # nothing but the noise reaches the step
    step, state = aggregate_stack(
        algorithm.aggregation, zeros, torch.ones(m),
        info=RoundInfo(seed=1, round=0, num_clients=100, cohort_size=m),
    )  # fmt: skip
    expected = z * clip_norm / m  # 0.375
    # the sample std of 200,000 normals is within 0.5% of sigma with overwhelming probability
    assert float(step.std()) == pytest.approx(expected, rel=5e-3)
    assert abs(float(step.mean())) < 5 * expected / math.sqrt(num_params)
    assert state["server"][0] == {
        "rounds": 1, "population": 100, "sampling": "uniform", "cohort": m, "rate": m / 100
    }  # fmt: skip


def test_the_sum_of_clipped_updates_is_divided_by_the_expected_cohort():
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])  # norms 5, 0.5, 0
    step, _ = aggregate_stack(
        dp_fedavg(1.0, 0.0).aggregation, updates, torch.ones(3),
        info=RoundInfo(num_clients=10, cohort_size=4),
    )  # fmt: skip
    # (0.6, 0.8) + (0.3, 0.4) + 0, divided by M = 4 (not by the 3 that arrived)
    assert step.tolist() == pytest.approx([0.225, 0.3])


SHORT = ["rounds=4", "data.num_clients=10", "model.name=digits_mlp", "client.epochs=1",
         "engine=sequential", "eval.clients=false", "server.fraction=0.5",
         "algorithm={name: dp_fedavg, clip_norm: 0.5, noise_multiplier: 0.8, delta: 1e-4}"]  # fmt: skip


def test_the_reported_epsilon_is_the_accountants_for_the_rounds_that_ran():
    history = simulate_config(load_config(None, SHORT))
    reported = [r.metrics["dp_epsilon"] for r in history.reports]
    for t, value in enumerate(reported, start=1):
        setting = PrivacySetting(10, 5, t, 1e-4, sampling="uniform", accountant="rdp")
        assert value == pytest.approx(epsilon(setting, 0.8), rel=1e-12)
    assert reported == sorted(reported) and reported[0] > 0


def test_a_resumed_run_keeps_its_ledger(tmp_path):
    config = load_config(None, SHORT)
    uninterrupted = simulate_config(config)
    two = load_config(None, [*SHORT, "rounds=2"])
    checkpoint = Checkpoints(tmp_path, fingerprint="dp")
    simulate_config(two, checkpoint=checkpoint)
    resumed = simulate_config(config, checkpoint=checkpoint)
    assert resumed.final_state.aggregation["server"][0]["rounds"] == 4
    assert (
        resumed.reports[-1].metrics["dp_epsilon"] == uninterrupted.reports[-1].metrics["dp_epsilon"]
    )
    assert torch.equal(resumed.final_state.params, uninterrupted.final_state.params)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("clip_norm: 0", "algorithm.clip_norm"),
        ("noise_multiplier: -1", "algorithm.noise_multiplier"),
        ("delta: 1.5", "algorithm.delta"),
    ],
)
def test_bad_privacy_options_are_config_errors_naming_the_field(option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"algorithm={{name: dp_fedavg, {option}}}"])
    with pytest.raises(ConfigError, match="server.weighting: DP-FedAvg sums clipped updates"):
        from fedloom.config import build_algorithm

        build_algorithm(load_config(None, ["algorithm=dp_fedavg", "server.weighting=examples"]))


def test_a_private_run_shows_its_epsilon_in_the_summary_and_a_plot(tmp_path, capsys):
    from fedloom.cli import main

    argv = ["run", "--runs-dir", str(tmp_path), "--name", "dp", "--no-progress"]
    for setting in (*SHORT, "rounds=2"):
        argv += ["--set", setting]
    assert main(argv) == 0
    expected = epsilon(PrivacySetting(10, 5, 2, 1e-4, sampling="uniform"), 0.8)
    out = capsys.readouterr().out
    assert "privacy spent (epsilon)" in out and f"{expected:.3f}" in out
    assert (tmp_path / "dp" / "privacy.png").stat().st_size > 1000


def _spent(rounds, z=0.8):
    return epsilon(PrivacySetting(10, 5, rounds, 1e-4, sampling="uniform"), z)


def test_a_run_stops_before_the_round_that_would_exceed_its_budget(tmp_path, caplog):
    budget = (_spent(2) + _spent(3)) / 2  # two rounds fit, the third does not
    config = load_config(None, [*SHORT, f"algorithm.max_epsilon={budget}"])
    checkpoint = Checkpoints(tmp_path, fingerprint="budget")
    with caplog.at_level("WARNING", logger="fedloom"):
        history = simulate_config(config, checkpoint=checkpoint)
    assert len(history.reports) == 2
    assert history.reports[-1].metrics["dp_epsilon"] == pytest.approx(_spent(2), rel=1e-12)
    assert "stopping before round 3 of 4: the privacy budget: round 3 would bring epsilon" in (
        caplog.text
    )
    again = simulate_config(config, checkpoint=checkpoint)  # resumed: the ledger says no
    assert len(again.reports) == 2


def test_a_budget_without_a_noise_multiplier_is_spent_exactly_by_the_rounds():
    config = load_config(
        None, [*SHORT, "algorithm.noise_multiplier=null", "algorithm.max_epsilon=8.0"]
    )
    history = simulate_config(config)
    assert len(history.reports) == 4
    assert 8.0 * 0.99 < history.reports[-1].metrics["dp_epsilon"] <= 8.0


def test_a_budget_no_noise_reaches_is_a_config_error_and_nothing_runs(tmp_path, capsys):
    from fedloom.cli import main

    argv = ["run", "--runs-dir", str(tmp_path), "--no-progress"]
    for setting in (*SHORT, "algorithm.noise_multiplier=null", "algorithm.max_epsilon=1e-9"):
        argv += ["--set", setting]
    assert main(argv) == 2
    assert "algorithm.max_epsilon: epsilon: no noise multiplier up to 1000" in (
        capsys.readouterr().err
    )
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="give a noise multiplier, or max_epsilon"):
        from fedloom.config import build_algorithm

        build_algorithm(load_config(None, [*SHORT, "algorithm.noise_multiplier=null"]))
