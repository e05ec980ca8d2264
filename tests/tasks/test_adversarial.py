"""Adversarial fairness: gradient reversal flips exactly the adversary's gradient into the
predictor, the fairness gaps on a hand-made prediction table, the task's loss and metrics,
and the same run on the sequential and vectorized engines (process and Ray:
tests/integration/test_adversarial_engines.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from fedloom.algorithms import fedavg
from fedloom.client import LocalTraining
from fedloom.data import Natural, federate
from fedloom.data.fair_synthetic import label_gap, load_fair_synthetic
from fedloom.simulation import simulate
from fedloom.tasks import AdversarialFairness, adversarial_fairness
from fedloom.tasks.adversarial import AdversarialModel
from fedloom.tasks.fairness import demographic_parity_gap, equalized_odds_gap
from fedloom.tasks.reversal import grad_reverse


def test_gradient_reversal_is_the_identity_forward_and_minus_scale_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([2.0, 4.0, -6.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.0, -2.0, 3.0]))  # -0.5 * (2, 4, -6)
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        grad_reverse(x, -1.0)


def _tiny_model(lam: float) -> AdversarialModel:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    return AdversarialModel(
        encoder, nn.Linear(4, 2), nn.Linear(4, 2), reads="representation", lam=lam
    )


def test_reversal_flips_exactly_the_adversarys_gradient_into_the_predictor():
    """With reversal, one backward of L_task + L_adv gives the adversary dL_adv/du and the
    predictor dL_task/dw - lam * dL_adv/dw, each computed here by plain autograd apart."""
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    batch = {"x": x, "y": torch.tensor([0, 1, 1, 0, 1, 0]), "s": torch.tensor([1, 1, 0, 0, 1, 0])}
    lam = 0.7
    model = _tiny_model(lam)
    task = AdversarialFairness(lam=lam, num_groups=2).task()
    task.batch_loss(model(x), batch).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}

    reference = _tiny_model(lam)  # the same weights (same seed), no reversal anywhere
    hidden = reference.encoder(x)
    l_task = nn.functional.cross_entropy(reference.head(hidden), batch["y"])
    l_adv = nn.functional.cross_entropy(reference.adversary(hidden), batch["s"])
    predictor = [p for n, p in reference.named_parameters() if not n.startswith("adversary")]
    adversary = list(reference.adversary.parameters())
    g_task = torch.autograd.grad(l_task, predictor, retain_graph=True, allow_unused=True)
    g_adv = torch.autograd.grad(l_adv, predictor + adversary, allow_unused=True)
    names = [n for n, _ in reference.named_parameters() if not n.startswith("adversary")]
    for i, name in enumerate(names):
        t = g_task[i] if g_task[i] is not None else 0.0
        a = g_adv[i] if g_adv[i] is not None else 0.0
        assert torch.allclose(got[name], t - lam * a, atol=1e-7), name
    for i, (name, _) in enumerate(reference.adversary.named_parameters()):
        assert torch.allclose(got[f"adversary.{name}"], g_adv[len(names) + i], atol=1e-7)
    # the encoder's gradient really holds the reversed adversary share (it is not zero)
    assert g_adv[0].abs().sum() > 1e-3


def test_phases_let_only_one_player_learn_and_keep_the_outputs():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    batch = {"x": x, "y": torch.tensor([0, 1, 1, 0, 1]), "s": torch.tensor([1, 0, 0, 1, 1])}
    model = _tiny_model(2.0)
    task = AdversarialFairness(lam=2.0).task()
    for phase, learner in (("adversary", "adversary."), ("predictor", "")):
        staged = model.with_phase(phase)
        assert torch.equal(staged(x), model(x))
        params = dict(staged.named_parameters())
        grads = torch.autograd.grad(task.batch_loss(staged(x), batch), list(params.values()))
        for (name, _), g in zip(params.items(), grads, strict=True):
            moves = name.startswith("adversary.") == (learner == "adversary.")
            assert bool(g.abs().sum() > 0) == moves, (phase, name)
    assert model.phase == "both" and model.training_phases() == ()


def test_fairness_gaps_on_a_hand_made_prediction_table():
    # group 0: y = 1 1 0 0, yhat = 1 0 1 0 -> positive rate 2/4, TPR 1/2, FPR 1/2
    # group 1: y = 1 1 1 0 0 0, yhat = 1 1 1 1 0 0 -> positive rate 4/6, TPR 1, FPR 1/3
    y = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
    yhat = np.array([1, 0, 1, 0, 1, 1, 1, 1, 0, 0])
    s = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    assert demographic_parity_gap(yhat, s) == pytest.approx(4 / 6 - 2 / 4)
    assert equalized_odds_gap(yhat, y, s) == pytest.approx(max(1 - 1 / 2, 1 / 2 - 1 / 3))
    # the task computes the same numbers from means of per-example indicators
    task = adversarial_fairness()
    logits = torch.nn.functional.one_hot(torch.from_numpy(yhat), 2).float()
    guesses = torch.tensor([[1.0, 0.0]] * 10)  # the adversary always guesses group 0
    batch = {"y": torch.from_numpy(y), "s": torch.from_numpy(s)}
    values = task.example_metrics(torch.cat([logits, guesses], 1), batch)
    summary = task.summarize({k: v.double().mean().numpy() for k, v in values.items()})
    assert summary["demographic_parity_gap"] == pytest.approx(1 / 6)
    assert summary["equalized_odds_gap"] == pytest.approx(1 / 2)
    assert summary["accuracy"] == pytest.approx(0.7)
    assert summary["adversary_accuracy"] == pytest.approx(0.4)  # 4 of 10 are group 0
    assert summary["group_majority"] == pytest.approx(0.6)
    assert not any(name.startswith("_") for name in summary)
    # one group only: no gap to measure
    assert np.isnan(demographic_parity_gap(yhat[:4], s[:4] * 0))


def test_options_are_checked_with_their_names():
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        AdversarialFairness(lam=-0.5)
    with pytest.raises(ValueError, match="reads must be one of output, representation"):
        AdversarialFairness(reads="input")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of reversal, alternating"):
        AdversarialFairness(mode="both")  # type: ignore[arg-type]
    task = adversarial_fairness(sensitive="race")
    out = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="sensitive: the batch has no 'race' entry"):
        task.batch_loss(out, {"y": torch.tensor([0, 1]), "s": torch.tensor([0, 1])})


def test_the_generator_sets_the_label_gap_and_the_clients_group_mixes():
    data = load_fair_synthetic(
        num_clients=3, examples_per_client=4000, label_bias=0.5, noise=0.5, test_size=10
    )
    s, y, owner = data.train_extra["s"].numpy(), data.train_y.numpy(), data.train_owner
    assert [round(float(s[owner == k].mean()), 2) for k in range(3)] == [0.1, 0.5, 0.9]
    gap = y[s == 1].mean() - y[s == 0].mean()
    assert gap == pytest.approx(label_gap(0.5, 0.5), abs=0.03)  # 2 Phi(0.5/1.118) - 1 = 0.345
    assert label_gap(0.5, 0.5) == pytest.approx(0.3453, abs=1e-4)
    flat = load_fair_synthetic(num_clients=2, examples_per_client=4000, label_bias=0.0)
    fs, fy = flat.train_extra["s"].numpy(), flat.train_y.numpy()
    assert abs(fy[fs == 1].mean() - fy[fs == 0].mean()) < 0.04


@pytest.fixture(scope="module")
def small_fair():
    ds = load_fair_synthetic(num_clients=4, examples_per_client=60, label_bias=0.4, test_size=200)
    return federate(ds, Natural(), holdout_fraction=0.25, seed=0)


def _run(data, engine: str, mode: str, sees_label: bool = False, **extra):
    setup = AdversarialFairness(
        lam=1.0, mode=mode, reads="representation", adversary_sees_label=sees_label
    )
    return simulate(
        fedavg(), data, lambda: setup.model(8, 2), task=setup.task(), rounds=2, fraction=1.0,
        local=LocalTraining(epochs=1, batch_size=16, lr=0.1), seed=3, engine=engine, **extra,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "sees_label"), [("reversal", False), ("alternating", False), ("reversal", True)]
)
def test_sequential_and_vectorized_engines_agree(small_fair, mode, sees_label):
    a = _run(small_fair, "sequential", mode, sees_label)
    b = _run(small_fair, "vectorized", mode, sees_label)
    for name in (
        "test_loss",
        "test_accuracy",
        "test_adversary_accuracy",
        "test_demographic_parity_gap",
    ):
        assert a.metric(name) == pytest.approx(b.metric(name), abs=1e-5)
    steps = a.reports[-1].metrics["num_local_steps"]
    assert steps == (2 if mode == "alternating" else 1) * 4 * 3  # 45 examples, B = 16: 3 steps


def test_per_client_metrics_match_the_gaps_computed_from_each_clients_predictions(small_fair):
    from fedloom.engine.evaluation import Evaluator
    from fedloom.params import flatten_buffers, flatten_params

    setup = AdversarialFairness(lam=1.0)
    torch.manual_seed(4)
    module = setup.model(8, 2)
    evaluator = Evaluator(module, small_fair, task=setup.task())
    got = evaluator.client_summaries(flatten_params(module), flatten_buffers(module))
    assert set(got) >= {
        "accuracy",
        "adversary_accuracy",
        "demographic_parity_gap",
        "equalized_odds_gap",
    }
    for k in range(small_fair.num_clients):
        index = torch.from_numpy(small_fair.client_holdout[k])
        batch = small_fair.dataset.train_batch(index)
        with torch.no_grad():
            out = module(batch["x"])
        yhat, y, s = out[:, :2].argmax(1).numpy(), batch["y"].numpy(), batch["s"].numpy()
        assert got["accuracy"][k] == pytest.approx((yhat == y).mean())
        assert got["adversary_accuracy"][k] == pytest.approx(
            (out[:, 2:].argmax(1).numpy() == s).mean()
        )
        dp = demographic_parity_gap(yhat, s, num_classes=2)
        eo = equalized_odds_gap(yhat, y, s, num_classes=2)
        assert got["demographic_parity_gap"][k] == pytest.approx(dp, nan_ok=True)
        assert got["equalized_odds_gap"][k] == pytest.approx(eo, nan_ok=True)
    assert np.array_equal(
        evaluator.client_scores(flatten_params(module), flatten_buffers(module)), got["accuracy"]
    )


def test_an_adversary_that_sees_the_label_reads_it():
    setup = AdversarialFairness(adversary_sees_label=True, adversary_hidden=0)
    torch.manual_seed(0)
    model = setup.model(3, 2)
    assert setup.task().inputs == ("x", "y") and model.adversary.in_features == 4
    x = torch.randn(4, 3)
    y0, y1 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    with torch.no_grad():
        a, b = model(x, y0), model(x, y1)
        expected = model.adversary.weight[:, 3] - model.adversary.weight[:, 2]
    assert torch.equal(a[:, :2], b[:, :2])  # the predictor does not see y
    assert torch.allclose(b[:, 2:] - a[:, 2:], expected.expand(4, 2), atol=1e-6)
    with pytest.raises(ValueError, match="needs forward"):
        model(x)
