"""EWC (Kirkpatrick et al. 2017): the penalty's gradient, the Fisher estimate, what travels."""

import numpy as np
import pytest
import torch
from torch import nn

from fedloom.client import EWCTerm, LocalContext, ProximalTerm, make_objective
from fedloom.client.ewc import accumulate_fisher, diagonal_fisher, ewc_context, ewc_writes
from fedloom.client.portable import describe, rebuild
from fedloom.client.store import with_writes
from fedloom.client.terms import EWC_ANCHOR, EWC_FISHER
from fedloom.errors import ConfigError
from fedloom.params import buffer_spec, flatten_params, param_spec

# a hand-made point whose every number is a small power of two: the arithmetic is exact
W = torch.tensor([1.0, -2.0, 3.0, 0.25])
ANCHOR = torch.tensor([0.0, 1.0, 3.0, -0.75])
FISHER = torch.tensor([0.5, 1.0, 0.0, 4.0])
CONTEXT = LocalContext(torch.zeros(4), extras={EWC_FISHER: FISHER, EWC_ANCHOR: ANCHOR})


def test_the_penalty_and_its_gradient_equal_the_hand_computed_ones_exactly():
    w = W.clone().requires_grad_()
    penalty = EWCTerm(2.0)(w, CONTEXT)
    # lam / 2 sum F (w - a)^2 = 1 * (0.5 * 1 + 1 * 9 + 0 * 0 + 4 * 1) = 13.5
    assert penalty.item() == 13.5
    (gradient,) = torch.autograd.grad(penalty, w)
    # lam * F * (w - a) = 2 * (0.5 * 1, 1 * -3, 0 * 0, 4 * 1)
    assert torch.equal(gradient, torch.tensor([1.0, -6.0, 0.0, 8.0]))
    assert torch.equal(gradient, 2.0 * FISHER * (W - ANCHOR))


def test_in_an_objective_the_terms_add_their_gradients_to_the_data_loss():
    module = nn.Linear(2, 2)
    spec, bspec = param_spec(module), buffer_spec(module)
    params = torch.tensor([0.5, -1.0, 0.25, 2.0, 0.0, 1.0])
    anchor = torch.zeros(6)
    fisher = torch.tensor([1.0, 0.0, 2.0, 0.5, 4.0, 1.0])
    w_global = torch.ones(6)
    context = LocalContext(w_global, extras={EWC_FISHER: fisher, EWC_ANCHOR: anchor})
    batch = {"x": torch.tensor([[1.0, 2.0], [0.0, -1.0]]), "y": torch.tensor([0, 1])}
    plain = make_objective(module, spec, bspec)
    both = make_objective(module, spec, bspec, terms=(EWCTerm(3.0), ProximalTerm(0.5)))
    g_plain, _ = plain.grad_and_value(params, torch.zeros(0), batch, context)
    g_both, _ = both.grad_and_value(params, torch.zeros(0), batch, context)
    expected = 3.0 * fisher * (params - anchor) + 0.5 * (params - w_global)
    torch.testing.assert_close(g_both - g_plain, expected, rtol=0, atol=1e-6)


def test_without_a_fisher_yet_the_penalty_is_zero():
    w = W.clone().requires_grad_()
    penalty = EWCTerm(5.0)(w, LocalContext(torch.zeros(4)))
    assert penalty.item() == 0.0
    assert torch.equal(torch.autograd.grad(penalty, w)[0], torch.zeros(4))


@pytest.mark.parametrize("lam", [-0.1, float("nan")])
def test_a_negative_lambda_is_a_config_error_naming_the_field(lam):
    with pytest.raises(ConfigError, match=r"ewc\.lam.*>= 0"):
        EWCTerm(lam)


def test_the_fisher_matches_a_hand_computed_one_on_a_linear_model():
    """Softmax regression: the gradient of -log p(y|x) is (p - e_y) x^T for the weight and
    p - e_y for the bias; the Fisher is the mean of their squares over the examples."""
    module = nn.Linear(3, 2)
    weight = np.array([[0.2, -0.5, 1.0], [-0.3, 0.8, 0.1]])
    bias = np.array([0.05, -0.1])
    with torch.no_grad():
        module.weight.copy_(torch.tensor(weight))
        module.bias.copy_(torch.tensor(bias))
    x = np.array([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.5], [0.3, -0.2, 0.0], [2.0, 1.0, -1.0]])
    y = np.array([0, 1, 1, 0])
    logits = x @ weight.T + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p - np.eye(2)[y]  # [N, 2]
    grad_w = delta[:, :, None] * x[:, None, :]  # [N, 2, 3]
    expected = np.concatenate([(grad_w**2).mean(0).reshape(-1), (delta**2).mean(0)])
    objective = make_objective(module, param_spec(module), buffer_spec(module))
    batch = {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(y)}
    for chunk in (1, 3, 256):  # chunking does not change the estimate
        fisher = diagonal_fisher(
            objective, flatten_params(module), torch.zeros(0), batch, chunk=chunk
        )
        np.testing.assert_allclose(fisher.numpy(), expected, rtol=1e-5, atol=1e-7)


def test_the_fisher_is_summed_over_tasks_and_the_anchor_moves_to_the_newest_task():
    assert torch.equal(accumulate_fisher(None, FISHER), FISHER)
    assert torch.equal(accumulate_fisher(FISHER, FISHER), 2 * FISHER)
    assert torch.equal(accumulate_fisher(FISHER, FISHER, decay=0.5), 1.5 * FISHER)
    capped = accumulate_fisher(FISHER, FISHER, max_value=1.5)  # 2F = (1, 2, 0, 8)
    assert torch.equal(capped, torch.tensor([1.0, 1.5, 0.0, 1.5]))
    with pytest.raises(ValueError, match="max_value"):
        accumulate_fisher(FISHER, FISHER, max_value=0.0)
    with pytest.raises(ValueError, match="decay"):
        accumulate_fisher(FISHER, FISHER, decay=1.5)
    store = with_writes({}, {3: ewc_writes({}, FISHER, ANCHOR)})
    store = with_writes(store, {3: ewc_writes(store[3], FISHER, W)})
    assert torch.equal(store[3][EWC_FISHER], 2 * FISHER)
    assert torch.equal(store[3][EWC_ANCHOR], W)
    mine = ewc_context(store, 3, torch.zeros(4), extras={"scaffold/c": torch.ones(4)})
    assert set(mine.extras) == {EWC_FISHER, EWC_ANCHOR, "scaffold/c"}
    assert ewc_context(store, 4, torch.zeros(4)).extras == {}  # never trained: no penalty


def test_what_travels_to_a_client_is_lambda_alone_never_a_fisher():
    description = describe(EWCTerm(7.5))
    assert description.name == "ewc"
    assert dict(description.numbers) == {"lam": 7.5} and not description.tensors
    assert rebuild(description) == EWCTerm(7.5)
