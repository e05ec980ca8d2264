"""Focal loss and class-weighted cross-entropy: values and gradients by hand, alpha's meaning
for several classes, bad options, and training on both in-process engines."""

import math
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import fedloom as fl
from fedloom.data import IID, Dataset, federate
from fedloom.tasks import classification, focal
from fedloom.tasks.focal import FocalLoss


def _loss_and_grad(loss_fn, logits, labels):
    logits = logits.clone().requires_grad_(True)
    loss = loss_fn(logits, {"x": logits, "y": labels})
    loss.sum().backward()
    return loss.detach(), logits.grad


def test_focal_value_and_gradient_at_a_hand_computed_p_t():
    # two classes, logits (0, log 3): p_t = 0.75 for label 1; gamma = 2, alpha = 0.25
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    loss, grad = _loss_and_grad(FocalLoss(2.0, 0.25, 1), logits, torch.tensor([1]))
    # FL = -0.25 * (1 - 0.75)^2 * log 0.75 = 0.25 * 0.0625 * 0.2876821 = 0.0044950
    assert float(loss[0]) == pytest.approx(0.25 * 0.0625 * -math.log(0.75), rel=1e-12)
    assert float(loss[0]) == pytest.approx(0.00449503, abs=1e-8)
    # dFL/dz_j = alpha [gamma (1-p) p log p - (1-p)^2] (delta_tj - p_j):
    # bracket = 2 * 0.25 * 0.75 * log 0.75 - 0.0625 = -0.1703808; times 0.25 and +-0.25
    bracket = 2 * 0.25 * 0.75 * math.log(0.75) - 0.0625
    assert grad[0, 1].item() == pytest.approx(0.25 * bracket * 0.25, rel=1e-12)  # -0.0106488
    assert grad[0, 1].item() == pytest.approx(-0.01064880, abs=1e-8)
    assert grad[0, 0].item() == pytest.approx(-grad[0, 1].item(), rel=1e-12)
    # label 0 (a negative): p_t = 0.25, weight 1 - alpha = 0.75
    loss0, _ = _loss_and_grad(FocalLoss(2.0, 0.25, 1), logits, torch.tensor([0]))
    assert float(loss0[0]) == pytest.approx(0.75 * 0.75**2 * -math.log(0.25), rel=1e-12)


def test_gamma_zero_is_cross_entropy_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(16, 5, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,))
    loss, grad = _loss_and_grad(FocalLoss(0.0, None, 1), logits, labels)
    ce, ce_grad = _loss_and_grad(
        lambda o, b: F.cross_entropy(o, b["y"], reduction="none"), logits, labels
    )
    assert torch.equal(loss, ce)
    assert torch.allclose(grad, ce_grad, rtol=0, atol=1e-15)


def test_focal_gradient_matches_the_closed_form_on_random_multiclass_inputs():
    torch.manual_seed(1)
    logits = torch.randn(32, 4, dtype=torch.float64)
    labels = torch.randint(0, 4, (32,))
    gamma, alpha, rare = 1.5, 0.8, 2
    _, grad = _loss_and_grad(FocalLoss(gamma, alpha, rare), logits, labels)
    p = torch.softmax(logits, 1)
    p_t = p[torch.arange(32), labels]
    a_t = torch.where(labels == rare, alpha, 1 - alpha)
    scale = a_t * (gamma * (1 - p_t) ** (gamma - 1) * p_t * torch.log(p_t) - (1 - p_t) ** gamma)
    expected = scale[:, None] * (F.one_hot(labels, 4) - p)
    assert torch.allclose(grad, expected, rtol=1e-10, atol=1e-14)


def test_alpha_weights_the_positive_class_and_one_minus_alpha_all_others():
    logits = torch.zeros(3, 3)  # p_t = 1/3 everywhere
    labels = torch.tensor([0, 1, 2])
    loss = FocalLoss(0.0, 0.9, positive_class=2)(logits, {"y": labels})
    ce = math.log(3.0)
    assert loss.tolist() == pytest.approx([0.1 * ce, 0.1 * ce, 0.9 * ce])


def test_focal_is_finite_where_p_t_rounds_to_one():
    logits = torch.tensor([[200.0, 0.0]], requires_grad=True)
    loss = FocalLoss(0.5, None, 1)(logits, {"y": torch.tensor([0])})
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gamma": -0.5}, "gamma must be a finite number >= 0"),
        ({"gamma": float("nan")}, "gamma must be"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ({"positive_class": -1}, "positive_class must be a label >= 0"),
    ],
)
def test_bad_focal_options_are_value_errors_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        focal(**options)


def test_class_weighted_cross_entropy_by_hand_and_its_errors():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    task = classification(class_weights=(1.0, 4.0))
    ce = F.cross_entropy(logits, labels, reduction="none")
    expected = (1.0 * ce[0] + 4.0 * ce[1]) / 2  # the plain mean of weighted losses
    assert float(task.batch_loss(logits, {"x": logits, "y": labels})) == pytest.approx(
        float(expected)
    )
    with pytest.raises(ValueError, match="class_weights has 3 entries but the model gives 2"):
        classification(class_weights=(1.0, 1.0, 1.0)).batch_loss(logits, {"y": labels})
    with pytest.raises(ValueError, match="class_weights must be finite, >= 0"):
        classification(class_weights=(0.0, 0.0))
    with pytest.raises(ValueError, match="class_weights must be finite, >= 0"):
        classification(class_weights=(1.0, -1.0))


def test_default_classification_is_unchanged_and_tasks_pickle():
    plain = classification()
    assert plain.mean_loss is not None and plain.loss.__name__ == "_cross_entropy"
    for task in (focal(class_metrics=(1,)), classification(class_weights=(1.0, 2.0))):
        assert pickle.loads(pickle.dumps(task)) == task


@pytest.mark.parametrize("task", [focal(gamma=2.0, alpha=0.75, positive_class=2),
                                  classification(class_weights=(1.0, 1.0, 3.0))])  # fmt: skip
def test_rare_class_losses_train_the_same_on_every_local_engine(task):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(240, 6)), dtype=torch.float32)
    y = torch.tensor(rng.choice(3, size=240, p=[0.5, 0.45, 0.05]))
    data = federate(Dataset("toy", x, y, x[:60], y[:60], num_classes=3), IID(6), seed=0)
    local = fl.LocalTraining(epochs=1, batch_size=16, lr=0.1)
    finals = []
    for engine in ("sequential", "vectorized", "process"):
        history = fl.simulate(
            fl.fedavg(), data, lambda: torch.nn.Linear(6, 3), rounds=2, fraction=0.5,
            local=local, task=task, engine=engine, workers=2, eval_clients=False,
        )  # fmt: skip
        finals.append(history.final_state.params)
    assert torch.allclose(finals[0], finals[1], atol=1e-5)  # vmap
    assert torch.allclose(finals[0], finals[2], atol=1e-6)  # pickled into worker processes
