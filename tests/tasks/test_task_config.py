"""The ``task`` config section: choosing focal loss or class-weighted cross-entropy from
YAML, option errors that name the field (exit 2 from the CLI), and runs that report the
rare class's metrics."""

import json
import math

import numpy as np
import pytest

from fedloom.cli import main
from fedloom.config import RunConfig, build_federated, build_task, load_config
from fedloom.errors import ConfigError
from fedloom.tasks import balanced_weights, classification
from fedloom.tasks.builtin import WeightedCrossEntropy
from fedloom.tasks.focal import FocalLoss


def test_focal_loss_is_configured_from_yaml(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "task:\n  name: focal\n  gamma: 1.5\n  alpha: 0.75\n  positive_class: 8\n"
        "  class_metrics: [8]\n"
    )
    config = load_config(path)
    task = build_task(config, build_federated(config))
    assert task.name == "focal"
    assert task.loss == FocalLoss(gamma=1.5, alpha=0.75, positive_class=8)
    assert load_config(None, ["task=focal", "task.alpha=null"]).task.alpha is None
    assert load_config(None, [f"task.{k}" for k in ("name=focal",)]).task.name == "focal"


def test_class_weighted_cross_entropy_is_a_classification_option():
    config = load_config(None, ["task.class_weights=[1,1,1,1,1,1,1,1,5,1]"])
    task = build_task(config, build_federated(config))
    assert task.loss == WeightedCrossEntropy((1.0,) * 8 + (5.0, 1.0))


def test_balanced_class_weights_come_from_the_clients_training_splits():
    config = load_config(None, ["task.class_weights=balanced", "data.partition=rare_class",
                                "data.partition.rare_class=8", "data.num_clients=5"])  # fmt: skip
    data = build_federated(config)
    counts = data.label_histograms().sum(0)
    task = build_task(config, data)
    weights = task.loss.weights
    assert weights == pytest.approx(counts.sum() / (10 * counts))
    assert weights[8] > 4 * max(w for c, w in enumerate(weights) if c != 8)  # the rare 8s
    assert float(np.dot(weights, counts) / counts.sum()) == pytest.approx(1.0)  # mean weight 1
    with pytest.raises(ConfigError, match="task.class_weights: balanced weights come from"):
        build_task(config, data.dataset)  # a client with its own data only
    with pytest.raises(ValueError, match="resolved from the data by the config"):
        classification(class_weights="balanced")
    with pytest.raises(ValueError, match=r"classes \[1\] have none"):
        balanced_weights([5, 0, 3])


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["task=focal", "task.gamma=-1"], "task.gamma: Input should be greater than or equal to 0"),
        (["task=focal", "task.alpha=1.5"], "task.alpha: Input should be less than or equal to 1"),
        (["task=focal", "task.alpha=-0.2"], "task.alpha: Input should be greater than or equal"),
        (["task=focal", "task.gamma=.inf"], "task.gamma"),
        (["task.class_weights=[1,-1]"], "task.class_weights.1"),
        (["task=focal", "task.beta=1"], "task.beta"),
        (["task=softmax"], "unknown task 'softmax'; registered: classification"),
    ],
)
def test_bad_task_options_are_config_errors_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("(", r"\(")):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.class_weights=[1,2]"], "task.class_weights: 2 weights for the 10 classes"),
        (["task.class_metrics=[3,12]"], r"task.class_metrics: label\(s\) \[12\] do not exist"),
        (["task=focal", "task.positive_class=10"], r"task.positive_class: label\(s\) \[10\]"),
    ],
)
def test_options_that_do_not_fit_the_data_are_named_when_the_run_is_built(overrides, message):
    config = load_config(None, overrides)
    with pytest.raises(ConfigError, match=message):
        build_task(config, build_federated(config))


def test_the_cli_exits_2_with_the_field_for_a_negative_gamma(tmp_path, capsys):
    code = main(["run", "--runs-dir", str(tmp_path), "--set", "task=focal",
                 "--set", "task.gamma=-0.5"])  # fmt: skip
    assert code == 2
    assert "task.gamma" in capsys.readouterr().err


def test_the_default_task_keeps_old_fingerprints_and_a_chosen_one_changes_it():
    default = RunConfig()
    assert default.fingerprint() == RunConfig.from_dict({"task": "classification"}).fingerprint()
    # no "task" key is left anywhere once the section is excluded ("task_sequence" may be)
    assert '"task":' not in json.dumps(default.model_dump(mode="json", exclude={"task"}))
    assert RunConfig.from_dict({"task": "focal"}).fingerprint() != default.fingerprint()
    weighted = {"task": {"class_weights": [1.0] * 10}}
    assert RunConfig.from_dict(weighted).fingerprint() != default.fingerprint()


def test_a_focal_run_reports_the_rare_class_metrics(tmp_path):
    sets = ["rounds=1", "data.num_clients=5", "client.epochs=1", "task=focal",
            "task.positive_class=8", "task.class_metrics=[8]", "task.pr_bins=20"]  # fmt: skip
    argv = ["run", "--no-progress", "--runs-dir", str(tmp_path), "--name", "focal"]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 0
    summary = json.loads((tmp_path / "focal" / "summary.json").read_text())
    for metric in ("test_recall_8", "test_f1_8", "test_pr_auc_8"):
        assert 0.0 <= summary[metric] <= 1.0
    # after one round nothing may be predicted as 8 yet: precision is then undefined (NaN)
    precision = summary["test_precision_8"]
    assert math.isnan(precision) or 0.0 <= precision <= 1.0
    assert not any(name.startswith("test__") for name in summary)
