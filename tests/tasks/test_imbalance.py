"""Metrics for imbalanced tasks: recall, precision, F1 and PR-AUC of a class, from means of
per-example indicators, against scikit-learn; hidden helper means; per-client evaluation."""

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from fedloom.data import IID, Dataset, federate
from fedloom.engine import Evaluator
from fedloom.params import flatten_buffers, flatten_params
from fedloom.tasks import classification, regression
from fedloom.tasks.imbalance import (
    average_precision,
    average_precision_bounds,
    with_class_metrics,
)


def _random_case(seed: int, rows: int = 600, classes: int = 4, rare: int = 2):
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, size=rows, p=[0.5, 0.3, 0.05, 0.15][:classes])
    logits = rng.normal(size=(rows, classes))
    logits[np.arange(rows), labels] += rng.uniform(0.0, 2.5, size=rows)  # informative, noisy
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(labels), rare


def _means(task, logits, labels):
    values = task.example_metrics(logits, {"x": logits, "y": labels})
    return {k: np.asarray(v.double().mean().item()) for k, v in values.items()}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_recall_precision_f1_match_sklearn_on_random_data(seed):
    logits, labels, rare = _random_case(seed)
    task = with_class_metrics(classification(), classes=(rare, 0))
    summary = task.summarize(_means(task, logits, labels))
    predicted = logits.argmax(1).numpy()
    for label in (rare, 0):
        y_true, y_pred = labels.numpy() == label, predicted == label
        assert float(summary[f"recall_{label}"]) == pytest.approx(recall_score(y_true, y_pred))
        assert float(summary[f"precision_{label}"]) == pytest.approx(
            precision_score(y_true, y_pred)
        )
        assert float(summary[f"f1_{label}"]) == pytest.approx(f1_score(y_true, y_pred))


@pytest.mark.parametrize(("seed", "bins"), [(0, 100), (1, 100), (2, 20), (3, 500)])
def test_pr_auc_is_sklearn_average_precision_within_the_stated_binning_error(seed, bins):
    logits, labels, rare = _random_case(seed, rows=2000)
    task = with_class_metrics(classification(), classes=(rare,), bins=bins)
    summary = task.summarize(_means(task, logits, labels))
    scores = torch.softmax(logits, 1)[:, rare].numpy()
    exact = average_precision_score(labels.numpy() == rare, scores)
    estimate = float(summary[f"pr_auc_{rare}"])
    # the bound needs counts: the same histogram the task builds, counted
    score_bin = np.minimum((scores * bins).astype(int), bins - 1)
    positive = labels.numpy() == rare
    pos_counts = np.bincount(score_bin[positive], minlength=bins)
    neg_counts = np.bincount(score_bin[~positive], minlength=bins)
    low, high = average_precision_bounds(pos_counts, neg_counts)
    assert low <= exact + 1e-12 and exact <= high + 1e-12
    assert low <= estimate + 1e-12 and estimate <= high + 1e-12
    assert abs(estimate - exact) <= high - low
    assert estimate == pytest.approx(float(average_precision(pos_counts, neg_counts)))
    assert high - low < 0.05 if bins >= 100 else True  # the bound is tight enough to be useful


def test_average_precision_of_untied_histograms_is_exact():
    # one example per bin: no ties, so the histogram AP is sklearn's exactly
    rng = np.random.default_rng(5)
    y = rng.random(50) < 0.3
    order = rng.permutation(50)  # example i sits in bin order[i]
    pos, neg = np.zeros(50), np.zeros(50)
    pos[order[y]], neg[order[~y]] = 1, 1
    low, high = average_precision_bounds(pos, neg)
    exact = average_precision_score(y, order.astype(float))
    assert float(average_precision(pos, neg)) == pytest.approx(exact)
    assert float(low) == pytest.approx(exact) and float(high) == pytest.approx(exact)


def test_helper_means_are_not_reported_and_regression_hides_its_moments():
    logits, labels, rare = _random_case(0, rows=50)
    task = with_class_metrics(classification(), classes=(rare,), bins=10)
    values = task.example_metrics(logits, {"x": logits, "y": labels})
    assert len(values) == 1 + 3 + 2 * 10  # accuracy plus the hidden indicators
    reported = task.summarize(_means(task, logits, labels))
    assert sorted(reported) == sorted(
        ["accuracy", f"recall_{rare}", f"precision_{rare}", f"f1_{rare}", f"pr_auc_{rare}"]
    )
    outputs = torch.randn(8, 1)
    means = _means(regression(), outputs, torch.randn(8))
    assert sorted(regression().summarize(means)) == ["mse", "r2"]


def test_a_class_absent_from_the_data_gives_nan_not_a_warning():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    task = with_class_metrics(classification(), classes=(2,), bins=4)
    summary = task.summarize(_means(task, logits, torch.tensor([0, 1])))
    assert all(np.isnan(summary[f"{m}_2"]) for m in ("recall", "precision", "f1", "pr_auc"))


def test_class_metrics_are_picklable_and_reject_bad_classes():
    task = with_class_metrics(classification(), classes=(1,), bins=8)
    clone = pickle.loads(pickle.dumps(task))
    assert clone == task
    with pytest.raises(ValueError, match="distinct labels"):
        with_class_metrics(classification(), classes=(1, 1))
    with pytest.raises(ValueError, match="bins must be >= 1"):
        with_class_metrics(classification(), classes=(1,), bins=0)


def test_evaluator_reports_class_metrics_globally_and_per_client_via_bincount():
    rng = np.random.default_rng(0)
    n = 400
    x = torch.tensor(rng.normal(size=(n, 3)), dtype=torch.float32)
    y = torch.tensor(rng.choice(3, size=n, p=[0.6, 0.3, 0.1]))
    dataset = Dataset("toy", x, y, x[:200], y[:200], num_classes=3)
    data = federate(dataset, IID(4), holdout_fraction=0.5, seed=0)
    module = torch.nn.Linear(3, 3)
    base = with_class_metrics(classification(), classes=(2,), bins=50)
    task = dataclasses.replace(base, score="recall_2")
    evaluator = Evaluator(module, data, task=task)
    params, buffers = flatten_params(module), flatten_buffers(module)
    metrics = evaluator.global_metrics(params, buffers)
    assert {"test_recall_2", "test_precision_2", "test_f1_2", "test_pr_auc_2"} <= set(metrics)
    assert not any(name.startswith("test__") for name in metrics)
    with torch.no_grad():
        predicted = module(x[:200]).argmax(1).numpy()
    assert metrics["test_recall_2"] == pytest.approx(
        recall_score(y[:200].numpy() == 2, predicted == 2)
    )
    scores = evaluator.client_scores(params, buffers)
    with torch.no_grad():
        all_predicted = module(x).argmax(1).numpy()
    for k, holdout in enumerate(data.client_holdout):
        truth = y.numpy()[holdout] == 2
        expected = recall_score(truth, all_predicted[holdout] == 2) if truth.any() else np.nan
        assert scores[k] == pytest.approx(expected, nan_ok=True)
