"""Tasks: hand-computed losses and metrics, masking, errors, and non-classification runs on
both in-process engines."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.data import IID, Dataset, federate
from fedloom.engine import Evaluator
from fedloom.params import flatten_params
from fedloom.tasks import classification, next_token, regression

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_task.py"


def test_classification_loss_is_cross_entropy_and_accuracy_counts_argmax():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.5]])
    labels = torch.tensor([0, 0, 1])
    batch = {"x": logits, "y": labels}
    task = classification()
    expected = np.mean(
        [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(1 / (1 + math.e)),
         -math.log(math.exp(1.5) / (math.exp(1) + math.exp(1.5)))]
    )  # fmt: skip
    assert float(task.batch_loss(logits, batch)) == pytest.approx(expected, rel=1e-6)
    assert task.example_metrics(logits, batch)["accuracy"].tolist() == [1.0, 0.0, 1.0]


def test_masked_loss_is_the_mean_over_real_examples_only():
    outputs = torch.tensor([[1.0], [3.0], [100.0]])
    y = torch.tensor([0.0, 0.0, 0.0])
    mask = torch.tensor([1.0, 1.0, 0.0])  # the third row is padding
    loss = regression().batch_loss(outputs, {"x": outputs, "y": y}, mask)
    assert float(loss) == pytest.approx((1.0 + 9.0) / 2)
    zero = regression().batch_loss(outputs, {"x": outputs, "y": y}, torch.zeros(3))
    assert float(zero) == 0.0


def test_regression_r2_matches_the_definition():
    predictions = np.array([2.5, 0.0, 2.0, 8.0])
    targets = np.array([3.0, -0.5, 2.0, 7.0])
    outputs = torch.tensor(predictions, dtype=torch.float32)[:, None]
    values = regression().example_metrics(outputs, {"x": outputs, "y": torch.tensor(targets)})
    means = {k: np.asarray(float(v.double().mean())) for k, v in values.items()}
    summary = regression().summarize(means)
    sse = np.sum((targets - predictions) ** 2)
    sst = np.sum((targets - targets.mean()) ** 2)
    assert float(summary["mse"]) == pytest.approx(sse / 4)
    assert float(summary["r2"]) == pytest.approx(1 - sse / sst, rel=1e-6)  # 0.9486...


def test_next_token_perplexity_of_uniform_logits_is_the_vocabulary_size():
    vocab, length = 7, 5
    logits = torch.zeros(3, length, vocab)
    targets = torch.randint(0, vocab, (3, length))
    task = next_token()
    batch = {"x": targets, "y": targets}
    assert float(task.batch_loss(logits, batch)) == pytest.approx(math.log(vocab), rel=1e-6)
    values = task.example_metrics(logits, batch)
    means = {k: np.asarray(float(v.mean())) for k, v in values.items()}
    assert float(task.summarize(means)["perplexity"]) == pytest.approx(vocab, rel=1e-5)


def test_a_loss_of_the_wrong_shape_names_the_task_and_both_shapes():
    task = fl.Task("mine", loss=lambda o, b: o.pow(2).mean(), metrics=lambda o, b: {}, score="x")
    outputs = torch.ones(4, 1)
    with pytest.raises(ValueError, match=r"task 'mine'.*shape \(4,\); got \(\)"):
        task.batch_loss(outputs, {"x": outputs, "y": torch.ones(4)}, torch.ones(4))


def test_a_metric_of_the_wrong_shape_names_the_metric():
    task = fl.Task("mine", loss=lambda o, b: o[:, 0], metrics=lambda o, b: {"m": o}, score="m")
    with pytest.raises(ValueError, match=r"metric 'm' must be a tensor of shape \(4,\).*\(4, 2\)"):
        task.example_metrics(torch.ones(4, 2), {"x": torch.ones(4, 2), "y": torch.ones(4)})


def _load_example():
    spec = importlib.util.spec_from_file_location("custom_task_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_task_example_trains_the_same_on_both_engines():
    example = _load_example()
    finals = {}
    for engine in ("sequential", "vectorized"):
        history = fl.simulate(
            fl.fedavg(), example.data, lambda: nn.Linear(5, 1), task=example.task,
            rounds=10, fraction=0.5, local=example.local, engine=engine,
        )  # fmt: skip
        finals[engine] = history
    seq, vec = (finals[e].final_state.params for e in ("sequential", "vectorized"))
    assert float((seq - vec).norm() / seq.norm()) < 1e-5
    metrics = finals["sequential"].reports[-1].metrics
    assert metrics["test_abs_error"] < 0.1  # the noise's mean absolute value is 0.08
    assert "client_abs_error_mean" in metrics
    # lower is better: the worst 10% of clients have the *largest* errors
    assert metrics["client_abs_error_worst10"] >= metrics["client_abs_error_best10"]


def test_regression_evaluation_reports_r2_globally_and_per_client():
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(400, 3, generator=rng)
    y = x @ torch.tensor([1.0, 2.0, -1.0])
    dataset = Dataset("lin", x[:300], y[:300], x[300:], y[300:], num_classes=1)
    data = federate(dataset, IID(5), holdout_fraction=0.2)
    module = nn.Linear(3, 1)
    params = flatten_params(module)
    evaluator = Evaluator(module, data, task=regression())
    metrics = evaluator.global_metrics(params, torch.zeros(0))
    with torch.no_grad():
        predictions = module(x[300:]).squeeze(1).double().numpy()
    targets = y[300:].double().numpy()
    expected_r2 = 1 - np.mean((predictions - targets) ** 2) / np.var(targets)
    assert metrics["test_r2"] == pytest.approx(expected_r2, rel=1e-4)
    spread = evaluator.client_metrics(params, torch.zeros(0))
    assert set(spread) >= {"client_r2_mean", "client_r2_worst10", "client_r2_smallest10"}


class _TinyLanguageModel(nn.Module):
    def __init__(self, vocab: int = 6, width: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.out = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(tokens)))


def test_next_token_task_learns_a_cyclic_sequence_on_both_engines():
    """Sequences that count up modulo 6: the next token is a function of the current one."""
    starts = torch.randint(0, 6, (240,), generator=torch.Generator().manual_seed(0))
    sequences = (starts[:, None] + torch.arange(9)) % 6
    x, y = sequences[:, :-1], sequences[:, 1:]
    dataset = Dataset("cycle", x[:200], y[:200], x[200:], y[200:], num_classes=6)
    data = federate(dataset, IID(8), holdout_fraction=0.0)
    finals = {}
    for engine in ("sequential", "vectorized"):
        finals[engine] = fl.simulate(
            fl.fedavg(), data, _TinyLanguageModel, task=next_token(), rounds=8, fraction=0.5,
            local=fl.LocalTraining(epochs=2, batch_size=5, lr=0.5), engine=engine,
        )  # fmt: skip
    seq, vec = (finals[e].final_state.params for e in ("sequential", "vectorized"))
    assert float((seq - vec).norm() / seq.norm()) < 1e-5
    metrics = finals["sequential"].reports[-1].metrics
    assert metrics["test_token_accuracy"] > 0.95
    assert metrics["test_perplexity"] < 1.5  # from 6 (uniform) at the start
