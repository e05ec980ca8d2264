"""Adaptive clipping (Andrew et al. 2021): the clip norm finds the target quantile, one round
matches a computation by hand, the updates' noise is z_Delta * S with z_Delta from Theorem 1,
epsilon is dp-accounting's for the overall z, the clip norm survives a resume, and bad
settings are config errors naming the field."""

import math

import dp_accounting as dpa
import pytest
import torch
from dp_accounting import rdp

from fedloom.aggregate import RoundInfo, aggregate_stack
from fedloom.config import build_algorithm, load_config
from fedloom.engine import Checkpoints
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.privacy.adaptive import effective_noise, update_noise
from fedloom.privacy.dp_fedavg import dp_fedavg


def _with_norms(norms, generator, size=3):
    """Updates of the given L2 norms in random directions, ``[K, size]``."""
    directions = torch.randn(len(norms), size, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    return (directions * torch.as_tensor(norms, dtype=torch.float64)[:, None]).float()


def _clip_norms(algorithm, *, rounds, cohort, seed=0):
    """The clip norm after each of ``rounds`` rounds of ``cohort`` updates whose norms are
    uniform on [0, 10], as both adaptive stages hold it."""
    generator = torch.Generator().manual_seed(seed)
    state, norms = None, []
    for t in range(rounds):
        updates = _with_norms(torch.rand(cohort, generator=generator) * 10, generator)
        info = RoundInfo(seed=seed, round=t, num_clients=10 * cohort, cohort_size=cohort)
        _, state = aggregate_stack(
            algorithm.aggregation, updates, torch.ones(cohort), state=state, info=info
        )
        clip_norm = state["per_client"][0]["clip_norm"]
        assert state["server"][0]["clip_norm"] == clip_norm  # the noise follows the same S
        norms.append(clip_norm)
    return norms


def test_without_count_noise_the_clip_norm_converges_to_the_target_quantile():
    # norms uniform on [0, 10]: the median is 5, the 0.8 quantile 8. From S = 0.1 the
    # geometric update (eta 0.2) needs ~60 rounds; after that, with 100 clients a round, S
    # wanders around the quantile by about 2% (the fraction below S has std ~0.05)
    algorithm = dp_fedavg(0.1, 0.0, target_quantile=0.5, clipped_count_stddev=0.0)
    norms = _clip_norms(algorithm, rounds=300, cohort=100)
    late = norms[100:]
    assert sum(late) / len(late) == pytest.approx(5.0, rel=0.02)
    assert all(4.5 < s < 5.5 for s in late)  # every late round within 10%
    higher = dp_fedavg(0.1, 0.0, target_quantile=0.8, clipped_count_stddev=0.0)
    late = _clip_norms(higher, rounds=300, cohort=100)[100:]
    assert sum(late) / len(late) == pytest.approx(8.0, rel=0.02)


def test_with_the_recommended_count_noise_it_still_tracks_the_quantile():
    # sigma_b = M / 20 = 5 (the default) adds noise of std 0.05 to the fraction: as much again
    algorithm = dp_fedavg(0.1, 1.0, target_quantile=0.5)
    late = _clip_norms(algorithm, rounds=300, cohort=100, seed=3)[100:]
    assert sum(late) / len(late) == pytest.approx(5.0, rel=0.05)


def test_one_round_by_hand():
    s, gamma, eta, m = 1.0, 0.5, 0.2, 4
    updates = torch.tensor([[0.3, 0.4], [1.2, 1.6], [0.6, 0.8]])  # norms 0.5, 2, 1: b = 1, 0, 1
    info = RoundInfo(seed=0, round=0, num_clients=10, cohort_size=m)

    # all M = 4 arrive, no noise: b~ = (1 + 0 + 1 + 1) / 4 = 0.75
    four = torch.cat([updates, torch.tensor([[0.0, 0.1]])])
    algorithm = dp_fedavg(s, 0.0, target_quantile=gamma, clip_learning_rate=eta,
                          clipped_count_stddev=0.0)  # fmt: skip
    step, state = aggregate_stack(algorithm.aggregation, four, torch.ones(4), info=info)
    assert state["per_client"][0]["clip_norm"] == pytest.approx(s * math.exp(-eta * 0.25))
    # the second update is clipped to norm 1: (0.6, 0.8); the sum over M = 4
    assert step.tolist() == pytest.approx([(0.3 + 0.6 + 0.6) / 4, (0.4 + 0.8 + 0.8 + 0.1) / 4])

    # three of the four arrive, and the count is noised: the centered bits sum to
    # (1 - 1/2) + (0 - 1/2) + (1 - 1/2) = 0.5, b~ = (0.5 + sigma_b n) / M + 1/2
    sigma_b = 2.0
    algorithm = dp_fedavg(s, 1.0, target_quantile=gamma, clip_learning_rate=eta,
                          clipped_count_stddev=sigma_b)  # fmt: skip
    _, state = aggregate_stack(algorithm.aggregation, updates, torch.ones(3), info=info)
    n = float(torch.randn((), generator=info.generator("dp_clip_count"), dtype=torch.float64))
    b = (0.5 + sigma_b * n) / m + 0.5
    expected = s * math.exp(-eta * (b - gamma))
    assert state["per_client"][0]["clip_norm"] == pytest.approx(expected, rel=1e-12)
    assert state["server"][0]["clip_norm"] == state["per_client"][0]["clip_norm"]


def test_the_update_noise_multiplier_follows_theorem_1():
    # z = 1, sigma_b = 1: z_Delta = (1 - 1/4)^(-1/2) = 2 / sqrt(3)
    assert update_noise(1.0, 1.0) == pytest.approx(2 / math.sqrt(3), rel=1e-15)
    assert update_noise(0.5, 5.0) == pytest.approx((0.5**-2 - 10.0**-2) ** -0.5, rel=1e-15)
    for z, sigma_b in [(1.0, 1.0), (0.7, 0.5), (2.0, 50.0)]:
        assert effective_noise(update_noise(z, sigma_b), sigma_b) == pytest.approx(z, rel=1e-12)
    assert update_noise(0.0, 1.0) == 0.0  # no privacy asked for: no noise
    with pytest.raises(ConfigError, match="algorithm.clipped_count_stddev: 0.5 is too small"):
        update_noise(1.0, 0.5)  # 2 sigma_b = z: the count alone would spend all of it


def test_the_updates_noise_is_z_delta_times_the_current_clip_norm_over_m():
    s, z, sigma_b, m, num_params = 2.0, 1.0, 1.0, 8, 200_000
    algorithm = dp_fedavg(s, z, target_quantile=0.5, clipped_count_stddev=sigma_b)
    step, _ = aggregate_stack(
        algorithm.aggregation, torch.zeros(m, num_params), torch.ones(m),
        info=RoundInfo(seed=1, round=0, num_clients=100, cohort_size=m),
    )  # fmt: skip
    expected = (2 / math.sqrt(3)) * s / m  # z_Delta S / M = 0.2887
    # the sample std of 200,000 normals is within 0.5% of sigma with overwhelming probability
    assert float(step.std()) == pytest.approx(expected, rel=5e-3)


SHORT = ["rounds=4", "data.num_clients=10", "model.name=digits_mlp", "client.epochs=1",
         "engine=sequential", "eval.clients=false", "server.fraction=0.5",
         "algorithm={name: dp_fedavg, clip_norm: 0.5, noise_multiplier: 0.8, delta: 1e-4, "
         "target_quantile: 0.5, clipped_count_stddev: 1.0}"]  # fmt: skip


def test_epsilon_is_dp_accountings_for_the_overall_noise_multiplier():
    history = simulate_config(load_config(None, SHORT))
    norms = [r.metrics["dp_clip_norm"] for r in history.reports]
    assert norms[0] != 0.5 and len(set(norms)) == 4  # the clip norm moves every round
    for t, report in enumerate(history.reports, start=1):
        accountant = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
        # replace-one (uniform sampling): sensitivity doubles, the overall z is halved
        sampled = dpa.SampledWithoutReplacementDpEvent(10, 5, dpa.GaussianDpEvent(0.8 / 2))
        accountant.compose(dpa.SelfComposedDpEvent(sampled, t))
        assert report.metrics["dp_epsilon"] == pytest.approx(
            accountant.get_epsilon(1e-4), rel=1e-12
        )


def test_the_clip_norm_survives_a_checkpoint_and_resume(tmp_path):
    uninterrupted = simulate_config(load_config(None, SHORT))
    checkpoint = Checkpoints(tmp_path, fingerprint="adaptive")
    simulate_config(load_config(None, [*SHORT, "rounds=2"]), checkpoint=checkpoint)
    resumed = simulate_config(load_config(None, SHORT), checkpoint=checkpoint)
    state, reference = resumed.final_state.aggregation, uninterrupted.final_state.aggregation
    assert state["per_client"][0] == reference["per_client"][0]
    assert state["server"][0] == reference["server"][0]  # ledger and clip norm
    assert [r.metrics["dp_clip_norm"] for r in resumed.reports] == [
        r.metrics["dp_clip_norm"] for r in uninterrupted.reports
    ]
    assert torch.equal(resumed.final_state.params, uninterrupted.final_state.params)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("target_quantile: 0", "algorithm.target_quantile"),
        ("target_quantile: 1", "algorithm.target_quantile"),
        ("target_quantile: -0.2", "algorithm.target_quantile"),
        ("clip_learning_rate: 0", "algorithm.clip_learning_rate"),
        ("clipped_count_stddev: -1", "algorithm.clipped_count_stddev"),
    ],
)
def test_bad_adaptive_options_are_config_errors_naming_the_field(option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"algorithm={{name: dp_fedavg, target_quantile: 0.5, {option}}}"])


def test_a_count_noise_too_small_for_z_is_a_config_error_and_nothing_runs(tmp_path, capsys):
    too_small = load_config(None, [*SHORT, "algorithm.clipped_count_stddev=0.3"])  # 0.6 < 0.8
    with pytest.raises(ConfigError, match="algorithm.clipped_count_stddev: 0.3 is too small"):
        build_algorithm(too_small)
    with pytest.raises(ConfigError, match="algorithm.clipped_count_stddev: only adaptive"):
        build_algorithm(load_config(None, ["algorithm={name: dp_fedavg, clipped_count_stddev: 1}"]))

    from fedloom.cli import main

    # the default sigma_b is M / 20 = 0.25 for a cohort of 5: too small for z = 0.8, which
    # only the run's cohort reveals; still a config error before anything runs
    argv = ["run", "--runs-dir", str(tmp_path), "--no-progress"]
    for setting in (*SHORT, "algorithm.clipped_count_stddev=null"):
        argv += ["--set", setting]
    assert main(argv) == 2
    assert "algorithm.clipped_count_stddev: 0.25 is too small" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
