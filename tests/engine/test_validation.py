"""Malformed, malicious and implausible updates are rejected with a reason and never touch
the global model."""

import logging
from dataclasses import replace

import pytest
import torch

import fedloom as fl
from fedloom.aggregate import Krum
from fedloom.client import LocalTraining
from fedloom.data import IID, federate
from fedloom.engine import UpdatePolicy, check_update, run_rounds, validate_updates
from fedloom.params import flatten_buffers, flatten_params
from fedloom.sim import SequentialExecutor
from fedloom.types import ClientResult

P = 4


def _ok(client_id=0, **changes):
    result = ClientResult(
        client_id=client_id,
        update=torch.full((P,), 0.5),
        buffers=torch.zeros(0),
        num_examples=10,
        num_steps=2,
        num_example_passes=20,
        train_loss=1.0,
    )
    return replace(result, **changes)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"update": torch.full((P + 1,), 0.5)}, "update has shape (5,), expected (4,)"),
        ({"update": torch.full((P,), 0.5, dtype=torch.float64)}, "dtype torch.float64"),
        ({"update": torch.tensor([0.0, float("nan"), 1.0, float("inf")])}, "2 non-finite"),
        ({"update": [0.5] * P}, "update is a list, not a tensor"),
        ({"buffers": torch.zeros(3)}, "buffers has shape (3,), expected (0,)"),
        ({"num_examples": 0}, "example count 0 is not a positive integer"),
        ({"num_examples": -5}, "example count -5"),
        ({"num_examples": 10**9}, "exceeds the plausible maximum 100000"),
        ({"num_examples": 2.5}, "example count 2.5 is not a positive integer"),
        ({"num_steps": 0}, "step count 0"),
        ({"update": torch.full((P,), 100.0)}, "update norm 200 exceeds the bound 10"),
        ({"statistics": {"initial_loss": float("nan")}}, "statistic 'initial_loss'"),
    ],
)
def test_each_malformed_update_is_rejected_with_its_reason(changes, reason):
    policy = UpdatePolicy(max_norm=10.0, max_examples=100_000)
    problem = check_update(_ok(**changes), num_params=P, num_buffers=0, policy=policy)
    assert problem is not None and reason in problem
    assert check_update(_ok(), num_params=P, num_buffers=0, policy=policy) is None


def test_duplicates_and_wrong_known_counts_are_rejected():
    valid, rejected = validate_updates(
        [_ok(1), _ok(1), _ok(2, num_examples=11)],
        num_params=P,
        num_buffers=0,
        policy=UpdatePolicy(),
        known_examples={1: 10, 2: 12},
    )
    assert [r.client_id for r in valid] == [1]
    assert [(r.client_id, r.reason) for r in rejected] == [
        (1, "a second update in the same round"),
        (2, "example count 11 differs from the client's known 12"),
    ]


class Tamper:
    """A real executor whose listed clients' results are replaced by ``corrupt(result)``."""

    def __init__(self, inner, corrupt):
        self.inner, self.corrupt = inner, corrupt

    def fit(self, plans, params, buffers, context):
        results = self.inner.fit(plans, params, buffers, context)
        return [self.corrupt(r) for r in results]


class OnlyClients:
    """A real executor that returns only the listed clients' results."""

    def __init__(self, inner, keep):
        self.inner, self.keep = inner, keep

    def fit(self, plans, params, buffers, context):
        return [
            r for r in self.inner.fit(plans, params, buffers, context) if r.client_id in self.keep
        ]


def _setup(digits, clients=6):
    data = federate(digits, IID(clients), seed=0)
    module = fl.models.digits_mlp()
    executor = SequentialExecutor(module, data, LocalTraining(epochs=1, lr=0.05))
    return module, executor


def _run(algorithm, executor, module, clients=6, **kwargs):
    return run_rounds(
        algorithm,
        executor,
        num_clients=clients,
        params=flatten_params(module),
        buffers=flatten_buffers(module),
        rounds=1,
        fraction=1.0,
        **kwargs,
    )


def test_bad_updates_never_touch_the_model_and_are_counted(digits, caplog):
    module, executor = _setup(digits)
    poisoned = {
        0: lambda r: replace(r, update=torch.full_like(r.update, float("nan"))),
        1: lambda r: replace(r, update=r.update[:-1]),
        2: lambda r: replace(r, update=r.update * 1e6),
    }

    def corrupt(result):
        return poisoned.get(result.client_id, lambda r: r)(result)

    policy = UpdatePolicy(max_norm=50.0)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        attacked = _run(fl.fedavg(), Tamper(executor, corrupt), module, policy=policy)
    honest_only = _run(fl.fedavg(), OnlyClients(executor, {3, 4, 5}), module, policy=policy)
    # exactly a round of the three honest clients alone
    assert torch.equal(attacked.final_state.params, honest_only.final_state.params)
    record = attacked.reports[0].metrics
    assert record["num_rejected"] == 3 and record["num_results"] == 3
    assert "rejected the update of client 0: update has" in caplog.text
    assert "client 1: update has shape" in caplog.text
    assert "client 2: update norm" in caplog.text
    assert torch.isfinite(attacked.final_state.params).all()


def test_too_few_valid_updates_skip_the_round(digits, caplog):
    module, executor = _setup(digits)
    everything_bad = Tamper(executor, lambda r: replace(r, num_examples=0))
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = _run(fl.fedavg(), everything_bad, module)
    assert torch.equal(history.final_state.params, flatten_params(module))
    assert history.reports[0].metrics["round_skipped"] == 1.0
    assert "0 valid updates, 1 needed (0 failed, 6 rejected, 0 dropped)" in caplog.text
    # Krum with f = 2 needs 2f + 3 = 7 updates; 6 clients cannot provide them
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = _run(fl.fedavg().with_aggregator(Krum(f=2)), executor, module)
    assert torch.equal(history.final_state.params, flatten_params(module))
    assert "6 valid updates, 7 needed" in caplog.text


def test_norms_far_above_the_rounds_median_are_rejected_and_large_claims_capped(caplog):
    scales = [1.0, 1.2, 0.9, 1.1, 50.0]  # update norms 1, 1.2, 0.9, 1.1, 50 (P = 4, 0.5 each)
    results = [_ok(k, update=torch.full((P,), 0.5 * s)) for k, s in enumerate(scales)]
    policy = UpdatePolicy(max_norm_ratio=10.0)
    valid, rejected = validate_updates(results, num_params=P, num_buffers=0, policy=policy)
    assert [r.client_id for r in valid] == [0, 1, 2, 3]
    # median of the five norms is 1.1 (torch's lower middle), so the bound is 11
    assert rejected[0].client_id == 4
    assert rejected[0].reason == "update norm 50 exceeds 10 x the round's median norm (11)"
    counts = [_ok(k, num_examples=n) for k, n in enumerate([10, 12, 11, 9, 10**6])]
    policy = UpdatePolicy(max_examples_ratio=10.0)
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        valid, rejected = validate_updates(counts, num_params=P, num_buffers=0, policy=policy)
    assert rejected == [] and [r.num_examples for r in valid] == [10, 12, 11, 9, 110]
    assert "client 4 claims 1000000 examples" in caplog.text and "capped at 110" in caplog.text
    with pytest.raises(ValueError, match="max_norm_ratio must be > 1"):
        UpdatePolicy(max_norm_ratio=1.0)


def test_deployment_turns_the_relative_checks_on_unless_they_are_off():
    from fedloom.config import ServerConfig, build_policy
    from fedloom.config.server import protections

    default = ServerConfig()
    assert build_policy(default).max_norm_ratio is None  # simulation: as the papers run
    deployed = build_policy(default, deployment=True)
    assert (deployed.max_norm_ratio, deployed.max_examples_ratio) == (10.0, 10.0)
    off = ServerConfig.model_validate({"validation": {"max_norm_ratio": "off"}})
    policy = build_policy(off, deployment=True)
    assert policy.max_norm_ratio is None and policy.max_examples_ratio == 10.0
    on, warnings = protections(off, policy)
    assert "example counts capped at 10 x the round's median" in on
    assert warnings == [
        "server.validation.max_norm_ratio is off and max_norm unset: one client's huge update "
        "can take over the mean"
    ]
