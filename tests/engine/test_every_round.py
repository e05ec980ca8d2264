"""Rounds without results: an aggregation that must run every round (DP-FedAvg's noised sum)
still runs and counts them; any other skips them; both are reported."""

import logging

import torch
from test_loop import DropClients, _setup

import fedloom as fl
from fedloom.aggregate import CoordinateMedian, RoundInfo, Sum, pipeline
from fedloom.engine import run_rounds
from fedloom.params import flatten_buffers, flatten_params
from fedloom.privacy.dp_fedavg import dp_fedavg


def test_only_a_stage_that_asks_for_it_over_a_sum_runs_every_round():
    assert dp_fedavg().aggregation.every_round
    assert not pipeline(weighting="uniform", reduce=Sum()).every_round  # e.g. secure sums
    assert not dp_fedavg().with_aggregator(CoordinateMedian()).aggregation.every_round
    assert not fl.fedavg().aggregation.every_round


def test_a_dp_round_whose_clients_all_failed_is_still_noised_and_counted(digits, caplog):
    data, module, executor = _setup(digits)
    params, buffers = flatten_params(module), flatten_buffers(module)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = run_rounds(
            dp_fedavg(clip_norm=0.5, noise_multiplier=1.0),
            DropClients(executor, range(4)),
            num_clients=4,
            params=params,
            buffers=buffers,
            rounds=1,
            fraction=0.5,
            seed=3,
        )
    noise = torch.randn(
        params.shape, generator=RoundInfo(seed=3, round=0).generator("dp_noise"),
        dtype=torch.float64,
    )  # fmt: skip
    expected = params + (0.5 * noise / 2).to(torch.float32)  # z S noise / M, M = 2
    assert torch.equal(history.final_state.params, expected)
    assert torch.equal(history.final_state.buffers, buffers)  # nothing to average
    metrics = history.reports[0].metrics
    assert (metrics["num_clients"], metrics["num_failures"], metrics["num_results"]) == (2, 2, 0)
    assert "round_skipped" not in metrics and metrics["dp_epsilon"] > 0
    assert history.final_state.aggregation["server"][0]["rounds"] == 1
    assert "the round is skipped" not in caplog.text


def test_poisson_rounds_report_their_varying_cohorts(digits):
    data, module, executor = _setup(digits)
    history = run_rounds(
        fl.fedavg(),
        executor,
        num_clients=4,
        params=flatten_params(module),
        buffers=flatten_buffers(module),
        rounds=3,
        fraction=0.5,
        sampling="poisson",
        seed=1,
    )
    sizes = [r.metrics["num_clients"] for r in history.reports]
    assert sizes == [2.0, 0.0, 3.0]  # seed 1: the second round samples nobody
    assert [r.metrics.get("round_skipped") for r in history.reports] == [None, 1.0, None]
    assert [r.metrics["num_results"] for r in history.reports] == sizes
