"""Secure aggregation in simulation (issue 15, slice 2): ``server.secure_aggregation`` runs
the whole protocol in the pipeline's reducer each round.

Every comparison is against the plain run with a stated bound: one round of FedAvg on
digits (20 clients, all sampled) with ``clip_range`` 20 (above every ``n_k u_k``
coordinate, 15.5 at most here) and 16 value bits, so the step differs from FedAvg's by at
most ``S * step_q / W`` per coordinate (``S`` survivors of total weight ``W``, ``step_q =
2 * 20 / (2^16 - 1)``: 9.4e-6 for all 20 clients), plus float32 rounding of the parameters
(< 1e-6 here). The bound is coarse enough that the tests see quantization (the difference is
not 0) and fine enough that a wrong weight or a lost client breaks it by orders of
magnitude.
"""

import logging

import numpy as np
import pytest
import torch

from fedloom.aggregate import Mean, RoundInfo, aggregate_stack, pipeline
from fedloom.cli import main
from fedloom.config import RunConfig, build_algorithm, load_config
from fedloom.config.spec import build_run
from fedloom.engine import Checkpoints
from fedloom.errors import ConfigError, RoundAborted
from fedloom.experiment import simulate_config
from fedloom.params import flatten_params
from fedloom.privacy.secagg import SecAggConfig
from fedloom.privacy.secagg.stage import SecureSum

BASE = [
    "rounds=1",
    "data.dataset=digits",
    "data.num_clients=20",
    "server.fraction=1.0",
    "client.epochs=1",
    "eval.clients=false",
]
SECURE = "server.secure_aggregation={clip_range: 20, value_bits: 16%s}"
FLOAT32_SLACK = 1e-6  # |params| < 2 here: float32 rounding of w + step is below 2.4e-7


def _run(*overrides):
    config = load_config(None, [*BASE, *overrides])
    return simulate_config(config)


@pytest.fixture(scope="module")
def plain():
    return _run()


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3], ids=["0%", "10%", "30%"])
def test_secure_fedavg_equals_plain_fedavg_within_the_quantization_bound(plain, fraction):
    """Dropouts after the masked input: the dropped clients' inputs are still in the sum (the
    server reconstructs their self-masks from the others' shares), so the result is FedAvg's
    over all 20 clients."""
    dropout = f", dropout: {{fraction: {fraction}, after: masked_input}}" if fraction else ""
    history = _run(SECURE % dropout)
    metrics = history.reports[0].metrics
    assert metrics["secagg_dropped"] == round(20 * fraction)
    assert metrics["secagg_in_sum"] == 20  # their inputs are in the sum
    assert metrics["secagg_clipped"] == 0.0
    num_params = plain.final_state.params.numel()  # the protocol ran: 32 bits per coordinate
    assert 4 * num_params < metrics["secagg_bytes_up_per_client"] < 4 * num_params + 10_000
    step_q = SecAggConfig(bits=32, clip_range=20, value_bits=16).for_cohort(20).quantizer.step
    bound = 20 * step_q / metrics["examples_processed"]  # W = sum n_k (one epoch each)
    assert bound == pytest.approx(9.4e-6, rel=0.01)
    diff = (history.final_state.params.double() - plain.final_state.params.double()).abs().max()
    assert 0 < float(diff) <= bound + FLOAT32_SLACK


@pytest.mark.parametrize("after", ["advertise", "share"])
def test_clients_dropping_before_their_masked_input_are_left_out_of_the_mean(after):
    """30% of 20 drop before sending their input: the decoded mean is the mean over the 14
    survivors (weights by examples included), within the bound of 14 survivors."""
    gen = torch.Generator().manual_seed(0)
    updates = torch.randn(20, 3000, generator=gen) * 0.01  # |n_k u_k| < 3.7 < clip_range
    weights = torch.randint(1, 100, (20,), generator=gen).double()
    stage = SecureSum(SecAggConfig(clip_range=5.0, value_bits=16), dropout_fraction=0.3,
                      dropout_after=after)  # fmt: skip
    info = RoundInfo(seed=3, round=5)
    dropped = stage.dropouts(list(range(20)), info)
    assert len(dropped) == 6
    survivors = [k for k in range(20) if k not in dropped]
    step, state = aggregate_stack(pipeline(reduce=stage), updates, weights, info=info)
    plain = Mean().combine(
        updates[survivors].double(), weights[survivors] / weights[survivors].sum()
    )
    bound = stage.error_bound(14, float(weights[survivors].sum()), 20)
    diff = float((step.double() - plain).abs().max())
    assert 0 < diff <= bound + 1e-8  # float32 rounding of a step of size ~0.01
    assert state["reduce"]["in_sum"] == 14 and state["reduce"]["dropped"] == 6
    assert state["reduce"]["clipped"] == 0.0
    everyone = Mean().combine(updates.double(), weights / weights.sum())
    assert float((step.double() - everyone).abs().max()) > 100 * bound  # the test can tell


def test_dp_with_secure_aggregation_equals_dp_alone_within_the_bound():
    """DP-FedAvg (clip 1, noise multiplier 1, seed 0): the same clipping and the same noise
    on the decoded sum, so the step differs only by the quantization of the clipped sum:
    ``20 * step_q / M`` with ``clip_range`` 1 covering every clipped coordinate."""
    dp = ["algorithm=dp_fedavg"]
    alone = _run(*dp)
    secure = _run(*dp, "server.secure_aggregation={clip_range: 1.0, value_bits: 16}")
    step_q = 2.0 / (2**16 - 1)
    bound = 20 * step_q / 20  # divided by the expected cohort M = 20
    diff = float(
        (secure.final_state.params.double() - alone.final_state.params.double()).abs().max()
    )
    assert 0 < diff <= bound + FLOAT32_SLACK
    assert secure.reports[0].metrics["dp_epsilon"] == alone.reports[0].metrics["dp_epsilon"]
    assert secure.reports[0].metrics["secagg_clipped"] == 0.0


def test_too_many_dropouts_skip_the_round_and_leave_the_model_unchanged(caplog):
    """t = 15 of 20 tolerates 5 dropouts; 10 drop after sharing keys every round: each round
    aborts cleanly, is logged and counted as skipped, and the model stays the initial one."""
    config = load_config(None, [*BASE, "rounds=2", "server.secure_aggregation={threshold: 15, "
                                "dropout: {fraction: 0.5, after: share}}"])  # fmt: skip
    spec = build_run(config)
    initial = flatten_params(spec.module)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = simulate_config(config, spec=spec)
    assert torch.equal(history.final_state.params, initial)
    assert history.final_state.round == 2
    for report in history.reports:
        assert report.metrics["round_skipped"] == 1.0 and report.metrics["round_aborted"] == 1.0
        assert "secagg_in_sum" not in report.metrics
    aborts = [r.getMessage() for r in caplog.records if "aggregation was aborted" in r.getMessage()]
    assert len(aborts) == 2 and "secure aggregation of round 0 aborted" in aborts[0]


def test_too_few_updates_for_the_threshold_abort_the_stage():
    stage = SecureSum(SecAggConfig(threshold=3))
    updates = torch.zeros(2, 10)
    with pytest.raises(RoundAborted, match="at least 3 clients"):
        aggregate_stack(pipeline(reduce=stage), updates, torch.ones(2))


def test_fractional_weights_are_refused_by_the_stage():
    stage = SecureSum(SecAggConfig())
    with pytest.raises(ValueError, match="whole numbers"):
        aggregate_stack(pipeline(reduce=stage), torch.zeros(3, 4), torch.tensor([1.0, 0.5, 2.0]))


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("{threshold: 21}", "server.secure_aggregation.threshold"),  # above the cohort of 20
        ("{threshold: 10}", "server.secure_aggregation.threshold"),  # below 11, a majority
        ("{neighbors: 4, threshold: 2}", "server.secure_aggregation.threshold"),  # 3 of 5 holders
        ("{bits: 4}", "server.secure_aggregation.bits"),  # 20 one-bit values need 5 bits
        ("{bits: 32, value_bits: 28}", "server.secure_aggregation.bits"),  # needs 33
        ("{clip_range: 0}", "server.secure_aggregation.clip_range"),
        ("{clip_range: -1.5}", "server.secure_aggregation.clip_range"),
        ("{clip_range: .inf}", "server.secure_aggregation.clip_range"),
        ("{neighbors: 3}", "server.secure_aggregation.neighbors"),
        ("{dropout: {fraction: 1.0}}", "server.secure_aggregation.dropout.fraction"),
        ("{dropout: {after: unmasking}}", "server.secure_aggregation.dropout.after"),
    ],
)
def test_bad_values_are_config_errors_naming_the_field(setting, field):
    with pytest.raises(ConfigError) as caught:
        config = load_config(None, [*BASE, f"server.secure_aggregation={setting}"])
        build_algorithm(config, 20)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["server.aggregator=median"], "server.aggregator (median)"),
        (["server.hierarchy={branching: [5]}"], "server.hierarchy"),
        (["server.validation.max_norm=10"], "server.validation.max_norm"),
        (["server.validation.max_examples_ratio=3"], "server.validation.max_examples_ratio"),
        (["algorithm=scaffold"], "per-client state"),
        (["algorithm=fednova"], "per-client stages"),
        (["server.weighting=inverse_variance"], "server.weighting inverse_variance"),
    ],
)
def test_what_needs_one_clients_update_is_a_config_error(overrides, named):
    config = load_config(None, [*BASE, *overrides, "server.secure_aggregation={}"])
    with pytest.raises(ConfigError, match="server.secure_aggregation") as caught:
        build_algorithm(config, 20)
    assert named in str(caught.value)


def test_server_clip_norm_and_fedprox_are_allowed():
    config = load_config(
        None, [*BASE, "algorithm=fedprox", "server.clip_norm=5", "server.secure_aggregation={}"]
    )
    algorithm = build_algorithm(config, 20)
    assert algorithm.aggregation.reduce.name == "secure_mean"
    assert [s.name for s in algorithm.aggregation.per_client] == ["clip"]


def test_the_cli_exits_2_naming_the_field_and_runs_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    sets = [item for o in BASE for item in ("--set", o)]
    code = main(["run", "--no-progress", "--runs-dir", str(runs), *sets,
                 "--set", "server.secure_aggregation={threshold: 25}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fedloom: config error: server.secure_aggregation.threshold")
    assert not runs.exists() or not any(runs.iterdir())


def test_off_keeps_the_fingerprint_and_on_changes_it():
    plain = RunConfig()
    assert RunConfig.from_dict({"server": {"secure_aggregation": None}}).fingerprint() == (
        plain.fingerprint()
    )
    # the fingerprint of the default run before secure aggregation existed (main, cca7708)
    assert plain.fingerprint() == "59758860d84e723ab9488c999cab2bdffb22d7be08e0134a04906f84c9b75e4f"
    on = RunConfig.from_dict({"server": {"secure_aggregation": {}}})
    other = RunConfig.from_dict({"server": {"secure_aggregation": {"clip_range": 2.0}}})
    assert len({plain.fingerprint(), on.fingerprint(), other.fingerprint()}) == 3


def test_the_same_seed_gives_the_same_secure_run():
    """The clients' secrets are fresh randomness, but the masks cancel exactly and the
    rounding draws come from the run seed: two runs agree bit for bit."""
    gen = torch.Generator().manual_seed(1)
    updates, weights = torch.randn(6, 50, generator=gen) * 0.1, torch.ones(6)
    p = pipeline(reduce=SecureSum(SecAggConfig(value_bits=8)))
    first, _ = aggregate_stack(p, updates, weights, info=RoundInfo(seed=9, round=1))
    again, _ = aggregate_stack(p, updates, weights, info=RoundInfo(seed=9, round=1))
    other, _ = aggregate_stack(p, updates, weights, info=RoundInfo(seed=10, round=1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert np.isfinite(first.numpy()).all()


def test_an_aborted_dp_round_spends_no_privacy_budget():
    config = load_config(None, [*BASE, "algorithm=dp_fedavg", "server.secure_aggregation="
                                "{threshold: 15, dropout: {fraction: 0.5, after: advertise}}"])  # fmt: skip
    history = simulate_config(config)
    assert history.reports[0].metrics["round_aborted"] == 1.0
    assert "dp_epsilon" not in history.reports[0].metrics
    assert history.final_state.aggregation["server"][0]["rounds"] == 0


def test_too_small_a_clip_range_is_reported_and_logged(caplog):
    stage = SecureSum(SecAggConfig(clip_range=0.5, value_bits=8))
    updates = torch.tensor([[0.1, 0.9], [0.2, -0.3], [0.0, 0.4]])
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        step, state = aggregate_stack(pipeline(reduce=stage), updates, torch.ones(3))
    assert state["reduce"]["clipped"] == pytest.approx(1 / 6)
    assert "clipped 1 of the 6 coordinates" in caplog.text
    assert "server.secure_aggregation.clip_range" in caplog.text
    assert float(step[1]) == pytest.approx((0.5 - 0.3 + 0.4) / 3, abs=3 * 1 / 255)


def test_a_resumed_secure_run_equals_the_uninterrupted_one(tmp_path):
    """The clients' secrets are fresh each round, but the masks cancel exactly and the
    rounding and the dropouts come from the run seed, so a resumed run is bit for bit the
    uninterrupted one; the stage's state (last round's numbers) is in the checkpoint."""
    overrides = [
        "server.fraction=0.5",
        "server.secure_aggregation={clip_range: 20, dropout: {fraction: 0.2, after: share}}",
    ]
    whole = _run(*overrides, "rounds=2")
    first = load_config(None, [*BASE, *overrides, "rounds=1"])
    simulate_config(first, checkpoint=Checkpoints(tmp_path, fingerprint=first.fingerprint()))
    both = load_config(None, [*BASE, *overrides, "rounds=2"])
    resumed = simulate_config(
        both, checkpoint=Checkpoints(tmp_path, fingerprint=both.fingerprint())
    )
    assert torch.equal(whole.final_state.params, resumed.final_state.params)
    assert resumed.reports[1].metrics["secagg_in_sum"] == 8  # 10 sampled, 2 dropped


def test_example_counts_that_could_overflow_the_group_are_a_config_error():
    """bits = 10 fits the values of 20 clients (5 bits each) but not their counts: at most
    1023 // 20 = 51 examples a client, and digits clients have about 65."""
    config = load_config(None, [*BASE, "server.secure_aggregation={bits: 10}"])
    with pytest.raises(ConfigError, match=r"server.secure_aggregation.bits = 10 .*at most 51 each"):
        build_run(config)


def test_the_deployed_server_refuses_simulated_dropouts(tmp_path, capsys):
    """Over gRPC (tests/net/test_secagg_deploy.py) dropouts are real; the simulated ones are
    a config error there, before the server listens."""
    code = main(["server", "--insecure", "--runs-dir", str(tmp_path / "runs"),
                 "--set", "server.secure_aggregation={dropout: {fraction: 0.1}}"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "server.secure_aggregation.dropout: simulated dropouts are for simulation" in err


def test_secagg_plus_with_dropouts_gives_the_survivors_mean():
    """SecAgg+ (6 neighbors of 20: 7 holders, t = 4) with 10% dropping after sharing keys."""
    gen = torch.Generator().manual_seed(2)
    updates = torch.randn(20, 500, generator=gen) * 0.01
    weights = torch.randint(1, 50, (20,), generator=gen).double()
    stage = SecureSum(SecAggConfig(clip_range=2.0, value_bits=16, neighbors=6),
                      dropout_fraction=0.1)  # fmt: skip
    info = RoundInfo(seed=1, round=0)
    survivors = [k for k in range(20) if k not in stage.dropouts(list(range(20)), info)]
    step, state = aggregate_stack(pipeline(reduce=stage), updates, weights, info=info)
    total = weights[survivors].sum()
    plain = Mean().combine(updates[survivors].double(), weights[survivors] / total)
    assert state["reduce"]["in_sum"] == 18 and state["reduce"]["clipped"] == 0.0
    assert (
        float((step.double() - plain).abs().max()) <= stage.error_bound(18, float(total), 20) + 1e-8
    )
