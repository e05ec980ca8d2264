"""fedloom's epsilon is dp-accounting's for the same mechanism, computed here independently;
the calibrated noise multiplier meets its target; bad settings are config errors; the
`fedloom privacy` calculator prints both directions."""

from dataclasses import replace

import dp_accounting as dpa
import pytest
from dp_accounting import pld, rdp

from fedloom.cli import main
from fedloom.errors import ConfigError
from fedloom.privacy import PrivacySetting, epsilon, noise_multiplier_for

N, M, T, DELTA, Z = 1000, 10, 500, 1e-5, 1.1


def _by_hand(accountant, sampled):
    accountant.compose(dpa.SelfComposedDpEvent(sampled, T))
    return accountant.get_epsilon(DELTA)


@pytest.mark.parametrize(
    ("sampling", "accountant", "reference"),
    [
        ("poisson", "rdp", lambda: _by_hand(
            rdp.RdpAccountant(), dpa.PoissonSampledDpEvent(M / N, dpa.GaussianDpEvent(Z)))),
        ("poisson", "pld", lambda: _by_hand(
            pld.PLDAccountant(), dpa.PoissonSampledDpEvent(M / N, dpa.GaussianDpEvent(Z)))),
        # replace-one: one client moves the sum by up to 2S, so std / sensitivity is Z / 2
        ("uniform", "rdp", lambda: _by_hand(
            rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE),
            dpa.SampledWithoutReplacementDpEvent(N, M, dpa.GaussianDpEvent(Z / 2)))),
    ],
)  # fmt: skip
def test_epsilon_is_dp_accountings_for_the_same_mechanism(sampling, accountant, reference):
    setting = PrivacySetting(N, M, T, DELTA, sampling=sampling, accountant=accountant)
    assert epsilon(setting, Z) == pytest.approx(reference(), rel=1e-12)


def test_a_poisson_rate_is_used_as_given_and_the_expected_cohort_need_not_be_whole():
    q = 0.0137  # 13.7 clients per round in expectation
    setting = PrivacySetting(N, q * N, T, DELTA, sampling="poisson", sampling_rate=q)
    assert setting.rate == q
    for accountant, make in (("rdp", rdp.RdpAccountant), ("pld", pld.PLDAccountant)):
        reference = _by_hand(make(), dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(Z)))
        value = epsilon(replace(setting, accountant=accountant), Z)
        assert value == pytest.approx(reference, rel=1e-12)


def test_the_limits_no_round_no_noise_and_more_rounds_more_epsilon():
    setting = PrivacySetting(N, M, T, DELTA)
    assert epsilon(setting, Z, rounds=0) == 0.0
    assert epsilon(setting, 0.0) == float("inf")
    assert epsilon(setting, Z, rounds=100) < epsilon(setting, Z, rounds=200) < epsilon(setting, Z)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_the_calibrated_noise_multiplier_meets_its_target_tightly(accountant):
    setting = PrivacySetting(N, M, T, DELTA, accountant=accountant)
    z = noise_multiplier_for(setting, 2.0)
    assert epsilon(setting, z) <= 2.0
    assert epsilon(setting, z * 0.99) > 2.0  # no noise to spare


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"delta": 0.0}, "delta: must be in \\(0, 1\\)"),
        ({"delta": 1.5}, "delta: must be in \\(0, 1\\)"),
        ({"cohort": 2000}, "cohort: the expected cohort must be more than 0 and at most"),
        ({"cohort": 0}, "cohort: the expected cohort must be more than 0 and at most"),
        ({"cohort": 2000, "sampling": "uniform"}, "cohort: must be a whole number between 1"),
        ({"cohort": 2.5, "sampling": "uniform"}, "cohort: must be a whole number between 1"),
        ({"sampling": "uniform", "sampling_rate": 0.01}, "sampling_rate: a Poisson sampling"),
        ({"cohort": 2.5, "sampling_rate": 0.01}, "cohort: 2.5 is not the sampling rate 0.01"),
        ({"population": 0}, "population: must be >= 1"),
        ({"sampling": "uniform", "accountant": "pld"}, "accountant: pld does not support"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        PrivacySetting(**{"population": N, "cohort": M, "rounds": T, "delta": DELTA, **change})


def test_bad_noise_and_unreachable_targets_are_config_errors():
    setting = PrivacySetting(N, M, T, DELTA)
    with pytest.raises(ConfigError, match="noise_multiplier: must be >= 0"):
        epsilon(setting, -1.0)
    with pytest.raises(ConfigError, match="epsilon: no noise multiplier up to 1000 reaches"):
        noise_multiplier_for(PrivacySetting(N, N, 10**6, 1e-12), 1e-6)


def test_the_calculator_prints_epsilon_and_the_noise_needed(capsys):
    common = ["privacy", "--population", str(N), "--cohort", str(M), "--rounds", str(T),
              "--delta", str(DELTA)]  # fmt: skip
    assert main([*common, "--noise-multiplier", str(Z)]) == 0
    expected = epsilon(PrivacySetting(N, M, T, DELTA), Z)
    assert f"epsilon {expected:.4f} with noise multiplier 1.1" in capsys.readouterr().out
    assert main([*common, "--epsilon", "2", "--sampling", "uniform"]) == 0
    z = noise_multiplier_for(PrivacySetting(N, M, T, DELTA, sampling="uniform"), 2.0)
    assert f"noise multiplier {z:.4f} for epsilon 2" in capsys.readouterr().out
    assert main([*common[:-1], "1.5", "--noise-multiplier", "1"]) == 2
    assert "delta: must be in (0, 1), got 1.5" in capsys.readouterr().err
