"""Early stopping and the best model: hand-counted rules, config runs, resume, deployment."""

import json

import pytest
import torch

from fedloom.config import RunConfig, build_federated, build_model
from fedloom.engine.early import BestModel, EarlyStopping, Improvement, resolve_mode
from fedloom.errors import ConfigError
from fedloom.experiment import run_experiment, simulate_config
from fedloom.model_file import load_model
from fedloom.params import flatten_params
from fedloom.types import RoundReport


def digits_config(tmp_path, **fields):
    """Digits, 4 IID clients, all in every round, two local steps: a second per round."""
    return RunConfig.from_dict(
        {
            "seed": 3,
            "data": {"dataset": "digits", "num_clients": 4, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"steps": 2, "batch_size": 20, "lr": 0.1},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            "output": {"runs_dir": str(tmp_path / "runs"), "plots": False},
            **fields,
        }
    )


def reports(values, name="test_accuracy"):
    """Round reports with ``name`` set (``None``: a round that did not evaluate)."""
    return [
        RoundReport(round=t + 1, metrics={"num_clients": 2.0} | ({} if v is None else {name: v}))
        for t, v in enumerate(values)
    ]


def stop_round(rule, values, name="test_accuracy"):
    for report in reports(values, name):
        rule.on_round(report, state=None)
        if rule.stop_requested:
            return report.round
    return None


def test_the_plateau_rule_by_hand():
    # best 0.6 at round 2; 0.6, 0.605 (< min_delta better) and 0.59 do not improve: stop at 5
    rule = EarlyStopping("test_accuracy", patience=3, min_delta=0.01)
    assert stop_round(rule, [0.5, 0.6, 0.6, 0.605, 0.59, 0.7]) == 5
    assert "not improved on its best 0.6 (round 2) for 3 evaluations" in rule.reason
    # an improvement resets the count; rounds without the metric (eval.every) do not count
    rule = EarlyStopping("test_accuracy", patience=2)
    assert stop_round(rule, [0.5, None, 0.4, 0.6, None, 0.6, None, None, 0.55]) == 9
    # a loss improves downwards (auto mode)
    rule = EarlyStopping("test_loss", patience=2)
    assert stop_round(rule, [1.0, 0.9, 0.95, 0.8, 0.85, 0.81], "test_loss") == 6
    assert resolve_mode("test_loss", "auto") == "min"
    assert resolve_mode("client_accuracy_worst10", "auto") == "max"
    assert resolve_mode("test_loss", "max") == "max"


def test_nan_never_counts_as_an_improvement():
    best = Improvement("test_accuracy")
    assert [best.offer(v) for v in (float("nan"), 0.2, float("nan"), 0.1)] == [
        False, True, False, False,
    ]  # fmt: skip
    assert best.best == 0.2


def test_a_metric_the_run_does_not_have_is_named_with_the_ones_it_has():
    rule = EarlyStopping("test_acc")
    with pytest.raises(ConfigError, match=r"'test_acc' is not among .*test_accuracy"):
        rule.on_round(reports([0.5])[0], state=None)


def test_bad_rules_are_config_errors_naming_the_field():
    for bad, field in (
        ({"early_stopping": {"metric": "test_loss", "patience": 0}}, "early_stopping.patience"),
        ({"early_stopping": {"metric": "test_loss", "mode": "up"}}, "early_stopping.mode"),
        ({"early_stopping": {"patience": 3}}, "early_stopping.metric"),
    ):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            RunConfig.from_dict(bad)


def test_a_run_stops_on_its_plateau_and_keeps_its_best_model(tmp_path):
    # no change of the loss is bigger than 100: rounds 2 and 3 do not improve, stop after 3
    config = digits_config(
        tmp_path,
        rounds=8,
        early_stopping={"metric": "test_loss", "patience": 2, "min_delta": 100.0},
        output={"runs_dir": str(tmp_path / "runs"), "plots": False, "best_model": "test_accuracy"},
    )
    outcome = run_experiment(config, show_progress=False)
    accuracy = outcome.history.metric("test_accuracy")
    assert len(accuracy) == 3
    summary = json.loads((outcome.run_dir / "summary.json").read_text())
    best_round = max(range(3), key=lambda t: (accuracy[t], -t)) + 1  # the first best
    assert summary["best_round"] == best_round
    assert summary["best_test_accuracy"] == accuracy[best_round - 1]
    assert "early stopping: test_loss has not improved" in summary["stopped_early"]
    # the file holds exactly the model of that round: a run of best_round rounds ends there
    shorter = simulate_config(config.model_copy(update={"rounds": best_round,
                                                        "early_stopping": None}))  # fmt: skip
    module = build_model(config, build_federated(config).dataset)()
    params, _ = load_model(outcome.run_dir / "best_model.safetensors", module)
    assert torch.equal(params, shorter.final_state.params)
    # resuming the stopped run trains nothing more
    again = run_experiment(config, show_progress=False, resume=outcome.run_dir)
    assert len(again.history.reports) == 3
    assert torch.equal(again.history.final_state.params, outcome.history.final_state.params)


def test_best_model_in_memory_and_after_a_resume(tmp_path):
    config = digits_config(tmp_path, rounds=4)
    module = build_model(config, build_federated(config).dataset)()
    path = tmp_path / "best.safetensors"
    keeper = BestModel("test_accuracy", path=path, module=module)
    history = simulate_config(config, callbacks=[keeper])
    accuracy = history.metric("test_accuracy")
    assert keeper.best_value == max(accuracy)
    assert keeper.best_round == accuracy.index(max(accuracy)) + 1
    assert torch.equal(load_model(path, module)[0], keeper.params)
    resumed = BestModel("test_accuracy", path=path, module=module)
    resumed.on_resume(tuple(history.reports), history.final_state)
    assert (resumed.best_round, resumed.best_value) == (keeper.best_round, keeper.best_value)
    assert torch.equal(resumed.params, keeper.params)
    assert not torch.equal(keeper.params, flatten_params(module))  # it trained
