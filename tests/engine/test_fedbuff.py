"""FedBuff: staleness weights, the buffered step, a hand-traced event sequence, and its
equivalence with synchronous FedAvg when nothing is stale."""

import math

import pytest
import torch

import fedloom as fl
from fedloom.aggregate.staleness import Staleness
from fedloom.algorithms import server_init
from fedloom.client import LocalTraining
from fedloom.engine import ClientProfile, FedBuff, VirtualClock, buffered_step
from fedloom.models import initial_module
from fedloom.simulation_async import simulate_fedbuff
from fedloom.types import ClientResult


@pytest.mark.parametrize(
    "staleness, s, expected",
    [
        (Staleness(), 0, 1.0),
        (Staleness(), 3, 0.5),  # 1 / sqrt(1 + 3): FedBuff's default
        (Staleness(), 8, 1 / 3),
        (Staleness("constant"), 100, 1.0),
        (Staleness("polynomial", a=2.0), 4, 1 / 25),  # (1 + 4)^-2
        (Staleness("polynomial", a=0.0), 9, 1.0),
        (Staleness("hinge", a=1.0, b=2), 2, 1.0),  # s <= b
        (Staleness("hinge", a=1.0, b=2), 4, 1 / 3),  # 1 / (1 (4 - 2) + 1)
        (Staleness("hinge", a=0.5, b=10), 14, 1 / 3),  # 1 / (0.5 (14 - 10) + 1)
    ],
)
def test_staleness_weights_match_the_formulas(staleness, s, expected):
    assert staleness.weight(s) == pytest.approx(expected, rel=1e-15)


def test_bad_staleness_settings_are_rejected():
    with pytest.raises(ValueError, match="kind must be one of constant, polynomial, hinge"):
        Staleness("exponential")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a must be >= 0"):
        Staleness(a=-1.0)
    with pytest.raises(ValueError, match="staleness must be >= 0"):
        Staleness().weight(-1)
    with pytest.raises(ValueError, match="buffer_size must be >= 1"):
        FedBuff(buffer_size=0)


def _result(client_id, update, n=10):
    return ClientResult(client_id, torch.tensor(update), torch.zeros(0), n, 1, n, 0.0)


def test_a_buffered_step_is_the_staleness_weighted_mean_times_the_server_lr():
    params = torch.tensor([1.0, -2.0, 0.5])
    state = server_init(fl.fedavg(weighting="uniform", server_lr=0.5), params, torch.zeros(0))
    buffer = [(_result(0, [2.0, 0.0, 4.0]), 0), (_result(1, [0.0, 8.0, -4.0]), 3)]
    new = buffered_step(
        fl.fedavg(weighting="uniform", server_lr=0.5), state, buffer,
        staleness=Staleness(), settings=LocalTraining(), num_clients=2, seed=0,
    )  # fmt: skip
    # x + 0.5 * (1 * u0 + 0.5 * u1) / 2
    expected = (
        params + 0.5 * (torch.tensor([2.0, 0.0, 4.0]) + 0.5 * torch.tensor([0.0, 8.0, -4.0])) / 2
    )
    torch.testing.assert_close(new.params, expected, rtol=0, atol=1e-7)
    assert new.round == 1 and state.round == 0


def _data(digits, num_clients):
    return fl.federate(
        digits, lambda ds, rng: fl.partition.iid(ds.num_train, num_clients, rng=rng), seed=0
    )


def _model_bytes(data):
    module = initial_module(fl.models.digits_mlp, seed=0)
    return 4 * sum(p.numel() for p in module.parameters())


def test_a_hand_traced_event_sequence(digits):
    """Three clients, K = 2, all three always training; each job passes 20 examples, its
    download and upload take 0.5 s each, compute 1, 2 and 5 s: jobs of 2, 3 and 6 s.

    t=0 all pull v0. t=2: c0 (v0, s=0) buffered, restarts on v0. t=3: c1 (v0, s=0): step ->
    v1; c1 restarts on v1. t=4: c0 (v0, s=1) buffered, restarts on v1. t=6: c2 (v0, s=1):
    step -> v2; then c1 (v1, s=1) and c0 (v1, s=1), same time, start order: step -> v3."""
    data = _data(digits, 3)
    size = _model_bytes(data)
    clock = VirtualClock(tuple(ClientProfile(s, 2.0 * size, 2.0 * size) for s in (20.0, 10.0, 4.0)))
    kw = dict(
        clock=clock, fedbuff=FedBuff(buffer_size=2, concurrency=3), steps=3,
        local=LocalTraining(steps=2, batch_size=10, lr=0.05),
    )  # fmt: skip
    history = simulate_fedbuff(fl.fedavg(weighting="uniform"), data, fl.models.digits_mlp, **kw)
    trace = [
        (
            r.metrics["sim_time_s"],
            r.clients["client_id"],
            r.clients["version"],
            r.clients["staleness"],
        )
        for r in history.reports
    ]
    assert trace == [
        (3.0, (0.0, 1.0), (0.0, 0.0), (0.0, 0.0)),
        (6.0, (0.0, 2.0), (0.0, 0.0), (1.0, 1.0)),
        (6.0, (1.0, 0.0), (1.0, 1.0), (1.0, 1.0)),
    ]
    assert [r.round for r in history.reports] == [1, 2, 3]
    assert history.metric("staleness_mean") == [0.0, 1.0, 1.0]
    assert all("test_accuracy" in r.metrics for r in history.reports)
    again = simulate_fedbuff(fl.fedavg(weighting="uniform"), data, fl.models.digits_mlp, **kw)
    assert torch.equal(again.final_state.params, history.final_state.params)  # seeded


@pytest.mark.parametrize("weighting", ["examples", "uniform"])
def test_with_nothing_stale_fedbuff_is_synchronous_fedavg(digits, weighting):
    """concurrency = K = the cohort (here the whole population of 4), every client equally
    fast: each step's buffer is one synchronous round's cohort, each client with its seed."""
    data = _data(digits, 4)
    clock = VirtualClock(tuple(ClientProfile(50.0, 1e6, 1e6) for _ in range(4)))
    local = LocalTraining(steps=3, batch_size=10, lr=0.1)
    algorithm = fl.fedavg(weighting=weighting)
    sync = fl.simulate(
        algorithm, data, fl.models.digits_mlp, rounds=3, fraction=1.0, local=local,
        engine="sequential", eval_clients=False,
    )  # fmt: skip
    buffered = simulate_fedbuff(
        algorithm, data, fl.models.digits_mlp, clock=clock,
        fedbuff=FedBuff(buffer_size=4, concurrency=4), steps=3, local=local,
    )  # fmt: skip
    assert buffered.metric("staleness_max") == [0.0, 0.0, 0.0]
    torch.testing.assert_close(
        buffered.final_state.params, sync.final_state.params, rtol=0, atol=2e-6
    )
    assert buffered.metric("test_accuracy") == pytest.approx(sync.metric("test_accuracy"))
    # the staleness weighting matters as soon as updates are stale: unequal speeds
    slow = VirtualClock(tuple(ClientProfile(s, 1e6, 1e6) for s in (50.0, 5.0, 20.0, 8.0)))
    stale = simulate_fedbuff(
        algorithm, data, fl.models.digits_mlp, clock=slow,
        fedbuff=FedBuff(buffer_size=2, concurrency=4), steps=4, local=local,
    )  # fmt: skip
    assert max(stale.metric("staleness_max")) >= 1
    assert not math.isclose(
        float((stale.final_state.params - sync.final_state.params).norm()), 0.0, abs_tol=1e-3
    )


def test_clients_that_are_never_online_are_skipped(digits):
    data = _data(digits, 4)
    gone = ClientProfile(50.0, 1e6, 1e6, windows=((0.0, 1e-9),))  # offline before any job ends
    clock = VirtualClock((gone, *(ClientProfile(50.0, 1e6, 1e6) for _ in range(3))))
    history = simulate_fedbuff(
        fl.fedavg(), data, fl.models.digits_mlp, clock=clock,
        fedbuff=FedBuff(buffer_size=2, concurrency=4), steps=3,
        local=LocalTraining(steps=1, batch_size=10),
    )  # fmt: skip
    assert len(history.reports) == 3
    assert 0.0 not in {c for r in history.reports for c in r.clients["client_id"]}
    assert sum(history.metric("num_failures")) >= 1


def test_a_config_with_a_fedbuff_section_runs_fedbuff(tmp_path):
    from fedloom.config import load_config
    from fedloom.experiment import run_experiment

    config = load_config(
        None,
        [
            "rounds=3", "data.num_clients=6", "client.steps=2", "eval.clients=false",
            "clock={}", "fedbuff.buffer_size=2", "fedbuff.concurrency=4",
            "fedbuff.staleness.kind=hinge", "fedbuff.staleness.b=0",
            f"output.runs_dir={tmp_path}",
        ],
    )  # fmt: skip
    assert config.fingerprint() != load_config(None, ["rounds=3", "data.num_clients=6",
        "client.steps=2", "eval.clients=false", "clock={}"]).fingerprint()  # fmt: skip
    outcome = run_experiment(config, show_progress=False)
    reports = outcome.history.reports
    assert [r.round for r in reports] == [1, 2, 3]
    assert all(r.metrics["num_results"] == 2.0 for r in reports)
    times = outcome.history.metric("sim_time_s")
    assert times == sorted(times) and times[0] > 0
    assert (outcome.run_dir / "accuracy_sim_time.png").stat().st_size > 5_000


def test_the_deployed_server_refuses_a_fedbuff_config():
    from fedloom.config import load_config
    from fedloom.errors import ConfigError
    from fedloom.net.board import Access
    from fedloom.net.deploy import serve

    config = load_config(None, ["clock={}", "fedbuff={}", "data.num_clients=2"])
    with pytest.raises(
        ConfigError, match="fedbuff: asynchronous FedBuff is not available over gRPC"
    ):
        serve(config, access=Access(("a", "b")), credentials=None)
