"""FedRep: the head trains alone, then the body alone (hand-computed on quadratics and exact
on a real model), the server never moves the head, every engine agrees, config and errors."""

import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.algorithms import fedrep, prepare_plans, server_init, server_update
from fedloom.algorithms.personal import PERSONAL_VALUES, with_model
from fedloom.client import LocalContext, local_init, local_step, make_objective
from fedloom.client.alternation import Alternation, alternating_schedule, trainable
from fedloom.client.portable import describe, rebuild
from fedloom.data import Dirichlet, federate
from fedloom.errors import ConfigError
from fedloom.params import buffer_spec, flatten_params, param_spec
from fedloom.simulation import initial_module
from fedloom.tasks import take
from fedloom.types import ClientPlan


def _tiny():
    return nn.Sequential(nn.Linear(2, 1))  # 0.weight (2 values: the body), 0.bias (the head)


def _quadratic(settings, algorithm):
    """One client with F(w) = 1/2 ||w - (2, 4, 6)||^2 (curvature 1 everywhere)."""
    return fl.sim.QuadraticExecutor(
        torch.ones(1, 3), torch.tensor([[2.0, 4.0, 6.0]]), [1], settings,
        program=algorithm.client_program(),
    )  # fmt: skip


def _fit(executor, params):
    context = LocalContext(global_params=params)
    (result,) = executor.fit([ClientPlan(0, 0, 0)], params, {0: torch.zeros(0)}, context)
    return result


def test_head_then_body_by_hand():
    """w = (0, 0 | 0), lr 0.5, one head step then one body step on F = 1/2 ||w - b||^2.
    Head step: g = (-2, -4, -6), only the bias moves: (0, 0 | 3). Body step: g = (-2, -4, -3),
    only the weights move: (1, 2 | 3). Plain SGD on every coordinate would give
    (1, 2 | 3) after one step too, but (1.5, 3 | 4.5) after two."""
    algorithm = with_model(fedrep(["0.bias"], head_steps=1), _tiny())
    settings = fl.LocalTraining(lr=0.5, steps=1)
    result = _fit(_quadratic(settings, algorithm), torch.zeros(3))
    assert result.update.tolist() == [1.0, 2.0, 3.0]
    assert result.num_steps == 2


def test_momentum_of_the_frozen_part_does_not_leak():
    """Momentum 0.5, two head steps then one body step, from w = 0, b = (2, 4 | 6), lr 0.5.
    Head 1: g = (-2, -4, -6), v = (0, 0, -6), w = (0, 0, 3). Head 2: g = (-2, -4, -3),
    v = (0, 0, 0.5 * -6 - 3) = (0, 0, -6), w = (0, 0, 6). Body: g = (-2, -4, 0),
    v = (-2, -4, -6) (the head's velocity stays frozen), w = (1, 2, 6). Had the body's
    velocity gathered the head phase's gradients, the body would end at (1.75, 3.5)."""
    algorithm = with_model(fedrep(["0.bias"], head_steps=2), _tiny())
    settings = fl.LocalTraining(lr=0.5, steps=1, momentum=0.5)
    result = _fit(_quadratic(settings, algorithm), torch.zeros(3))
    assert result.update.tolist() == [1.0, 2.0, 6.0]


def test_the_server_never_changes_the_head():
    """Two clients, updates (1, 0 | 4) and (0, 2 | -2), n = 10 and 30, server lr 0.5: the
    body moves by 0.5 * (0.25, 1.5); the head stays 3 bit for bit and each client keeps its
    own."""
    algorithm = with_model(fedrep(["0.bias"], server_lr=0.5), _tiny())
    state0 = server_init(algorithm, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(0))
    results = [
        fl.types.ClientResult(0, torch.tensor([1.0, 0.0, 4.0]), torch.zeros(0), 10, 1, 1, 0.0),
        fl.types.ClientResult(1, torch.tensor([0.0, 2.0, -2.0]), torch.zeros(0), 30, 1, 1, 0.0),
    ]
    state1 = server_update(algorithm, state0, results)
    assert state1.params.tolist() == pytest.approx([1.125, 2.75, 3.0])
    assert state1.params[2].item() == 3.0
    assert state1.clients[0][PERSONAL_VALUES].tolist() == [7.0]
    assert state1.clients[1][PERSONAL_VALUES].tolist() == [1.0]
    plans = prepare_plans(algorithm, state1, [ClientPlan(0, 1, 0), ClientPlan(9, 1, 0)])
    assert plans[0].start.tolist() == pytest.approx([1.125, 2.75, 7.0])  # its own head
    assert plans[1].start is None  # never took part: the global body and the initial head


def test_a_masked_step_leaves_the_frozen_part_bit_for_bit(digits):
    """On the digits MLP with momentum and weight decay: a head step moves only the head, a
    body step only the body, and the frozen part's velocity stays as it was."""
    module = initial_module(fl.models.digits_mlp, seed=0)
    algorithm = with_model(fedrep(["3.*"]), module)
    head = algorithm.personal.resolved()
    objective = make_objective(module, param_spec(module), buffer_spec(module))
    settings = fl.LocalTraining(lr=0.1, momentum=0.9, weight_decay=0.01)
    data = federate(digits, Dirichlet(4, 0.5), seed=0).client_batch(0)
    w0 = flatten_params(module)
    context = LocalContext(global_params=w0)
    state = local_init(w0, torch.zeros(0), settings)
    batches = [take(data, torch.arange(i, i + 10)) for i in (0, 10, 20)]
    for batch, moving in zip(batches, (head, head, ~head), strict=True):
        after = local_step(
            state, batch, objective=objective, settings=settings, context=context,
            trainable=moving,
        )  # fmt: skip
        assert torch.equal(after.params[~moving], state.params[~moving])
        assert torch.equal(after.velocity[~moving], state.velocity[~moving])
        assert not torch.equal(after.params[moving], state.params[moving])
        state = after
    assert not torch.equal(state.params[head], w0[head])
    assert not torch.equal(state.params[~head], w0[~head])


def _run(data, engine, *, steps=2, rounds=2, head_steps=3, momentum=0.5):
    return fl.simulate(
        fedrep(["3.*"], head_steps=head_steps), data, fl.models.digits_mlp, rounds=rounds,
        fraction=0.5, seed=1, engine=engine, workers=2,
        local=fl.LocalTraining(steps=steps, batch_size=10, lr=0.1, momentum=momentum),
    )  # fmt: skip


def test_the_body_phase_never_touches_the_head(digits):
    """The head phase's batches come first from the client's stream, so a client's new head
    is the same whatever the body phase's length; and the global head stays the initial
    one."""
    data = federate(digits, Dirichlet(6, 0.5), seed=0)
    short = _run(data, "sequential", steps=1, rounds=1).final_state
    long = _run(data, "sequential", steps=4, rounds=1).final_state
    assert sorted(short.clients) == sorted(long.clients) and short.clients
    for client_id, entries in short.clients.items():
        assert torch.equal(entries[PERSONAL_VALUES], long.clients[client_id][PERSONAL_VALUES])
    assert not torch.equal(short.params, long.params)  # the body did train longer
    module = initial_module(fl.models.digits_mlp, seed=1)
    head = with_model(fedrep(["3.*"]), module).personal.resolved()
    assert torch.equal(long.params[head], flatten_params(module)[head])


@pytest.mark.parametrize("engine", ["vectorized", "process"])
def test_engines_equal_sequential(digits, engine):
    data = federate(digits, Dirichlet(6, 0.5), seed=0)
    reference = _run(data, "sequential", rounds=3).final_state
    other = _run(data, engine, rounds=3).final_state
    assert torch.allclose(other.params, reference.params, rtol=0, atol=1e-5)
    assert sorted(other.clients) == sorted(reference.clients)
    for client_id, entries in reference.clients.items():
        theirs = other.clients[client_id][PERSONAL_VALUES]
        assert torch.allclose(theirs, entries[PERSONAL_VALUES], rtol=0, atol=1e-5)


def test_schedule_is_head_batches_then_body_batches():
    import numpy as np

    alternation = Alternation(torch.tensor([True, False]), head_epochs=2)
    settings = fl.LocalTraining(steps=3, batch_size=4)
    batches, num_head = alternating_schedule(10, settings, alternation, np.random.default_rng(0))
    assert num_head == 6 and len(batches) == 9  # 2 epochs of ceil(10 / 4) = 3, then 3 steps
    assert trainable(alternation, 5, num_head).tolist() == [True, False]
    assert trainable(alternation, 6, num_head).tolist() == [False, True]


def test_the_alternation_travels_as_data():
    alternation = Alternation(torch.tensor([True, False, True]), head_steps=4)
    back = rebuild(describe(alternation))
    assert torch.equal(back.head, alternation.head)
    assert (back.head_epochs, back.head_steps) == (0, 4)


def test_head_work_errors_name_the_field():
    with pytest.raises(ConfigError, match="algorithm: give at most one of head_epochs"):
        fedrep(["0.bias"], head_epochs=2, head_steps=3)
    with pytest.raises(ConfigError, match="algorithm.head_epochs: must be >= 1, got 0"):
        fedrep(["0.bias"], head_epochs=0)
    with pytest.raises(ConfigError, match="no parameter is personal"):
        fedrep([])
    with pytest.raises(ValueError, match="give exactly one positive head_epochs or head_steps"):
        Alternation(torch.tensor([True]), head_epochs=1, head_steps=1)


YAML = ["rounds=2", "data.dataset=digits", "data.num_clients=6", "server.fraction=0.5"]


def test_fedrep_from_yaml_reports_the_personalized_spread():
    from fedloom.config import load_config
    from fedloom.experiment import simulate_config

    config = load_config(
        None, [*YAML, "algorithm={name: fedrep, personal: ['6.*'], head_epochs: 2}"]
    )
    metrics = simulate_config(config).reports[-1].metrics
    assert {"client_accuracy_mean", "client_personal_accuracy_mean",
            "client_personal_accuracy_worst10"} <= set(metrics)  # fmt: skip


def test_yaml_pattern_that_matches_nothing_is_a_config_error_naming_the_field():
    from fedloom.config import load_config
    from fedloom.config.spec import build_run

    config = load_config(None, [*YAML, "algorithm={name: fedrep, personal: ['head.*']}"])
    with pytest.raises(ConfigError, match=r"algorithm.personal: the pattern 'head.\*'.*6.bias"):
        build_run(config)
    config = load_config(
        None, [*YAML, "algorithm={name: fedrep, personal: ['6.*'], head_steps: 0}"]
    )
    with pytest.raises(ConfigError, match="head_steps"):
        build_run(config)
