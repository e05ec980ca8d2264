"""Adversarial fairness from YAML: the task section builds the task and the model, bad
options are config errors naming the field, and a run reports the fairness metrics."""

import json

import pytest

from fedloom.cli import main
from fedloom.config import RunConfig, build_federated, build_model, build_task, load_config
from fedloom.errors import ConfigError
from fedloom.tasks.adversarial import AdversarialLoss, AdversarialModel

BASE = [
    "data.dataset=fair_synthetic",
    "data.num_clients=null",
    "data.partition=natural",
    "data.fair_synthetic.num_clients=4",
    "data.fair_synthetic.examples_per_client=40",
    "data.fair_synthetic.test_size=100",
    "task=adversarial_fairness",
]


def test_the_task_section_builds_the_task_and_the_model():
    config = load_config(None, [*BASE, "task.lam=0.5", "task.reads=representation",
                                "task.mode=alternating", "task.adversary_hidden=0"])  # fmt: skip
    data = build_federated(config)
    assert data.num_clients == 4 and sorted(data.dataset.train_extra) == ["s"]
    task = build_task(config, data)
    assert task.loss == AdversarialLoss(num_groups=2, sensitive="s")
    model = build_model(config, data.dataset)()
    assert isinstance(model, AdversarialModel)
    assert (model.lam, model.reads, model.mode) == (0.5, "representation", "alternating")
    assert model.adversary.in_features == 32  # reads the hidden layer; a logistic adversary
    assert len(model.training_phases()) == 2
    odds = load_config(None, [*BASE, "task.adversary_sees_label=true"])
    assert build_task(odds, data).inputs == ("x", "y")
    assert build_model(odds, data.dataset)().adversary[0].in_features == 2 + 2  # log-probs, y


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.lam=-1"], "task.lam: Input should be greater than or equal to 0"),
        (["task.reads=input"], "task.reads: Input should be 'output' or 'representation'"),
        (["task.mode=both"], "task.mode: Input should be 'reversal' or 'alternating'"),
    ],
)
def test_bad_options_name_their_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*BASE, *overrides])


def test_a_sensitive_attribute_that_does_not_exist_names_the_field():
    config = load_config(None, [*BASE, "task.sensitive=race"])
    data = build_federated(config)
    with pytest.raises(ConfigError, match="task.sensitive: .* has no entry 'race'"):
        build_task(config, data)
    digits = load_config(None, ["task=adversarial_fairness"])  # digits carry no groups
    with pytest.raises(ConfigError, match=r"task.sensitive: digits has no entry 's' \(its extra entries: none\)"):  # fmt: skip
        build_task(digits, build_federated(digits))
    with pytest.raises(ConfigError, match="model.name: digits_mlp cannot be trained against an adversary"):  # fmt: skip
        build_model(load_config(None, [*BASE, "model.name=digits_mlp"]), data.dataset)


def test_new_sections_leave_the_default_fingerprint_alone():
    plain = RunConfig()
    assert (
        plain.fingerprint() == RunConfig.from_dict({"data": {"fair_synthetic": None}}).fingerprint()
    )
    tuned = RunConfig.from_dict({"data": {"fair_synthetic": {"label_bias": 0.2}}})
    assert tuned.fingerprint() != plain.fingerprint()


def test_a_run_reports_the_fairness_metrics(tmp_path, capsys):
    code = main(["run", *[a for o in BASE for a in ("--set", o)], "--set", "rounds=2",
                 "--set", "client.batch_size=10", "--runs-dir", str(tmp_path), "--no-progress"])  # fmt: skip
    assert code in (0, None)
    (metrics,) = tmp_path.glob("*/metrics.jsonl")
    last = json.loads(metrics.read_text().splitlines()[-1])
    for name in ("test_accuracy", "test_adversary_accuracy", "test_demographic_parity_gap",
                 "test_equalized_odds_gap", "test_group_majority"):  # fmt: skip
        assert 0.0 <= last[name] <= 1.0, name
    assert last["test_group_majority"] == 0.5  # the test set holds both groups equally
