"""The clipped-count denominator of DP-FedAvg (McMahan et al. 2018, estimator f_c): the sum
of clipped updates divided by max(q W_min, the weight that arrived), with noise of standard
deviation 2 z S / (q W_min), the estimator's sensitivity (the paper's Lemma 1) times z."""

import math

import pytest
import torch

from fedloom.aggregate import RoundInfo, aggregate_stack
from fedloom.config import build_run, load_config
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.privacy import PrivacySetting, epsilon
from fedloom.privacy.dp_fedavg import dp_fedavg

# norms 5, 0.5 and 0: clipped to S = 1 they are (0.6, 0.8), (0.3, 0.4) and (0, 0); the sum
# is (0.9, 1.2) and three updates (weight 1 each) arrived
UPDATES = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
UNIFORM_4_OF_10 = RoundInfo(num_clients=10, cohort_size=4)
POISSON_QUARTER = RoundInfo(num_clients=10, sampling="poisson", sampling_rate=0.25)


@pytest.mark.parametrize(
    ("info", "fraction", "denominator"),
    [
        (UNIFORM_4_OF_10, None, 4.0),  # q W_min = M = 4 > 3 arrived: divide by 4
        (UNIFORM_4_OF_10, 0.5, 3.0),  # q W_min = 2 < 3 arrived: divide by the 3
        (POISSON_QUARTER, None, 3.0),  # q W_min = q N = 2.5 < 3: divide by the 3
        (POISSON_QUARTER, 0.2, 3.0),  # q W_min = 0.5
    ],
)
def test_the_clipped_count_estimator_on_hand_made_updates(info, fraction, denominator):
    algorithm = dp_fedavg(1.0, 0.0, denominator="clipped_count", min_weight_fraction=fraction)
    step, _ = aggregate_stack(algorithm.aggregation, UPDATES, torch.ones(3), info=info)
    assert step.tolist() == pytest.approx([0.9 / denominator, 1.2 / denominator], rel=1e-6)
    fixed, _ = aggregate_stack(dp_fedavg(1.0, 0.0).aggregation, UPDATES, torch.ones(3), info=info)
    assert fixed.tolist() == pytest.approx([0.9 / info.expected_cohort, 1.2 / info.expected_cohort])


def test_its_noise_is_2_z_s_over_q_w_min_from_the_rounds_own_stream():
    clip_norm, z, num_params = 2.0, 1.5, 200_000
    info = RoundInfo(seed=4, round=2, num_clients=100, sampling="poisson", sampling_rate=0.08)
    algorithm = dp_fedavg(clip_norm, z, denominator="clipped_count", min_weight_fraction=0.5)
    zeros = torch.zeros(3, num_params)  # three updates arrived, nothing but noise in them
    step, state = aggregate_stack(algorithm.aggregation, zeros, torch.ones(3), info=info)
    floor = 0.5 * 0.08 * 100  # q W_min = 4
    sigma = 2 * z * clip_norm / floor  # 1.5
    noise = torch.randn(num_params, generator=info.generator("dp_noise"), dtype=torch.float64)
    assert torch.allclose(step, (sigma * noise).to(torch.float32), rtol=1e-6, atol=0)
    # the sample std of 200,000 normals is within 0.5% of sigma with overwhelming probability
    assert float(step.std()) == pytest.approx(sigma, rel=5e-3)
    assert abs(float(step.mean())) < 5 * sigma / math.sqrt(num_params)
    assert state["server"][0]["rounds"] == 1


def test_a_clipped_count_run_accounts_as_the_fixed_one_and_moves_otherwise():
    base = ["rounds=2", "data.num_clients=10", "model.name=digits_mlp", "client.epochs=1",
            "engine=sequential", "eval.clients=false", "server.fraction=0.5",
            "algorithm={name: dp_fedavg, clip_norm: 0.5, noise_multiplier: 0.8, delta: 1e-4}"]  # fmt: skip
    fixed = simulate_config(load_config(None, base))
    clipped = simulate_config(load_config(None, [*base, "algorithm.denominator=clipped_count"]))
    spent = epsilon(PrivacySetting(10, 5, 2, 1e-4, sampling="uniform"), 0.8)
    for history in (fixed, clipped):
        assert history.reports[-1].metrics["dp_epsilon"] == pytest.approx(spent, rel=1e-12)
    assert not torch.equal(fixed.final_state.params, clipped.final_state.params)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("denominator: mean", "algorithm.denominator: Input should be 'fixed' or 'clipped_count'"),
        ("min_weight_fraction: 0.5", "algorithm.min_weight_fraction: only the clipped_count"),
        ("denominator: clipped_count, min_weight_fraction: 0",
         "algorithm.min_weight_fraction: Input should be greater than 0"),
        ("denominator: clipped_count, min_weight_fraction: 1.5",
         "algorithm.min_weight_fraction: Input should be less than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_denominator_options_are_config_errors_naming_the_field(option, message):
    with pytest.raises(ConfigError) as caught:
        build_run(
            load_config(None, ["data.num_clients=4", f"algorithm={{name: dp_fedavg, {option}}}"])
        )
    assert message in str(caught.value)
