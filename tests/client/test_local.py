import numpy as np
import pytest
import torch
from torch import nn

from fedloom.client import (
    LocalContext,
    LocalTraining,
    batch_schedule,
    local_init,
    local_step,
    make_objective,
    train_client,
)
from fedloom.params import buffer_spec, flatten_params, param_spec
from fedloom.types import ClientPlan


def test_batch_schedule_epochs_steps_and_full_batch():
    rng = np.random.default_rng(0)
    batches = batch_schedule(25, LocalTraining(epochs=2, batch_size=10), rng)
    assert [len(b) for b in batches] == [10, 10, 5, 10, 10, 5]
    assert sorted(np.concatenate(batches[:3]).tolist()) == list(range(25))
    steps = batch_schedule(25, LocalTraining(steps=4, batch_size=10), rng)
    assert [len(b) for b in steps] == [10, 10, 5, 10]
    full = batch_schedule(25, LocalTraining(epochs=3, batch_size=None), rng)
    assert len(full) == 3 and all(np.array_equal(b, np.arange(25)) for b in full)
    small = batch_schedule(4, LocalTraining(epochs=1, batch_size=10), rng)
    assert [len(b) for b in small] == [4]


def test_local_training_rejects_bad_settings():
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        LocalTraining(epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        LocalTraining(lr=0.0)


def _setup(module):
    torch.manual_seed(0)
    objective = make_objective(module, param_spec(module), buffer_spec(module))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    return objective, x, y


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-2)])
def test_local_steps_match_torch_optim_sgd(momentum, weight_decay):
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    objective, x, y = _setup(module)
    settings = LocalTraining(lr=0.1, momentum=momentum, weight_decay=weight_decay)
    w0 = flatten_params(module)
    context = LocalContext(global_params=w0)
    state = local_init(w0, torch.zeros(0), settings)
    reference = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    reference.load_state_dict(module.state_dict())
    optimizer = torch.optim.SGD(
        reference.parameters(), lr=0.1, momentum=momentum, weight_decay=weight_decay
    )
    for step in range(5):
        batch = {"x": x[step * 6 : step * 6 + 6], "y": y[step * 6 : step * 6 + 6]}
        state = local_step(state, batch, objective=objective, settings=settings, context=context)
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(batch["x"]), batch["y"]).backward()
        optimizer.step()
    assert state.num_steps == 5 and state.num_example_passes == 30
    assert torch.allclose(state.params, flatten_params(reference), atol=1e-6, rtol=0)


def test_local_step_does_not_mutate_its_input_state():
    module = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    objective, x, y = _setup(module)
    w0 = flatten_params(module)
    buffers = torch.cat([torch.zeros(4), torch.ones(4)])
    state = local_init(w0, buffers, LocalTraining())
    params_before, buffers_before = state.params.clone(), state.buffers.clone()
    new = local_step(
        state,
        {"x": x, "y": y},
        objective=objective,
        settings=LocalTraining(),
        context=LocalContext(w0),
    )
    assert torch.equal(state.params, params_before)
    assert torch.equal(state.buffers, buffers_before)
    # batch norm in training mode moved the running mean towards the batch mean
    assert not torch.equal(new.buffers, buffers_before)


def test_train_client_returns_update_and_counts():
    module = nn.Sequential(nn.Linear(6, 3))
    objective, x, y = _setup(module)
    w0 = flatten_params(module)
    result = train_client(
        ClientPlan(client_id=7, round=0, seed=0),
        {"x": x, "y": y},
        w0,
        torch.zeros(0),
        objective=objective,
        settings=LocalTraining(epochs=2, batch_size=8),
        context=LocalContext(w0),
    )
    assert result.client_id == 7 and result.num_examples == 32
    assert result.num_steps == 8 and result.num_example_passes == 64
    assert result.update.shape == w0.shape and result.update.abs().sum() > 0
    assert result.train_loss > 0


def test_autograd_and_torch_func_gradients_agree_exactly():
    """The one-client path (autograd) and the vmappable path (torch.func) are the same math."""
    torch.manual_seed(3)
    module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    objective, x, y = _setup(module)
    w = flatten_params(module)
    prox = lambda flat, ctx: 0.5 * ((flat - ctx.global_params) ** 2).sum()  # noqa: E731
    with_term = make_objective(module, param_spec(module), buffer_spec(module), terms=(prox,))
    context = LocalContext(global_params=w - 0.1)
    for obj in (objective, with_term):
        g1, l1 = obj.grad_and_value(w, torch.zeros(0), {"x": x, "y": y}, context)
        g2, l2 = obj.functional_grad_and_value(w, torch.zeros(0), {"x": x, "y": y}, context)
        assert torch.equal(g1, g2) and torch.equal(l1, l2)
    # the proximal term adds exactly mu * (w - w_t) = 0.1 to every coordinate's gradient
    g_plain, _ = objective.grad_and_value(w, torch.zeros(0), {"x": x, "y": y}, context)
    g_prox, _ = with_term.grad_and_value(w, torch.zeros(0), {"x": x, "y": y}, context)
    assert torch.allclose(g_prox - g_plain, torch.full_like(w, 0.1), atol=1e-6)
    # and vmap over a stacked cohort gives each client's own gradient
    cohort = torch.stack([w, w + 0.01, w - 0.02])
    batch = {"x": x, "y": y}
    batched = torch.func.vmap(
        lambda p: objective.functional_grad_and_value(p, torch.zeros(0), batch, context)[0]
    )(cohort)
    for k in range(3):
        single, _ = objective.grad_and_value(cohort[k], torch.zeros(0), {"x": x, "y": y}, context)
        assert torch.allclose(batched[k], single, atol=1e-6)


def test_an_objective_term_of_the_wrong_shape_is_named():
    import pytest
    import torch
    from torch import nn

    from fedloom.client import LocalContext, make_objective
    from fedloom.params import buffer_spec, flatten_params, param_spec

    def per_coordinate_penalty(w, context):  # forgot to sum
        return w.pow(2)

    module = nn.Linear(3, 2)
    objective = make_objective(
        module, param_spec(module), buffer_spec(module), terms=(per_coordinate_penalty,)
    )
    params = flatten_params(module)
    with pytest.raises(
        ValueError, match=r"term 'per_coordinate_penalty' must return a scalar.*\(8,\)"
    ):
        objective(params, torch.zeros(0), {"x": torch.ones(4, 3), "y": torch.zeros(4).long()},
                  LocalContext(params))  # fmt: skip
