"""The lifelong algorithm (EWC + proximal) in the engine: each client trains with its own
Fisher and anchor from the client-state store, on every engine, exactly as the study's
hand-driven loop does, and none of it reaches the server."""

import pytest
import torch

import fedloom as fl
from fedloom.algorithms import prepare_plans, server_init, server_update
from fedloom.algorithms.lifelong import lifelong
from fedloom.client import LocalTraining, make_objective, train_client
from fedloom.client.ewc import ewc_context
from fedloom.client.terms import EWC_ANCHOR, EWC_FISHER
from fedloom.data import Dirichlet, federate
from fedloom.engine import plans_for_round
from fedloom.errors import ConfigError
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.simulation import initial_module

LOCAL = LocalTraining(epochs=1, batch_size=16, lr=0.1)
LAM, MU = 50.0, 0.1


@pytest.fixture(scope="module")
def case(digits):
    data = federate(digits, Dirichlet(8, 0.5), seed=0)
    module = initial_module(fl.models.digits_mlp, seed=1)
    params = flatten_params(module)
    gen = torch.Generator().manual_seed(3)
    # clients 0..5 have finished a task (a Fisher near the stable range, anchors away from w0);
    # clients 6 and 7 have none yet
    store = {
        k: {
            EWC_FISHER: torch.rand(params.numel(), generator=gen) * (1.0 / (LOCAL.lr * LAM)),
            EWC_ANCHOR: params + 0.05 * torch.randn(params.numel(), generator=gen),
        }
        for k in range(6)
    }
    return data, module, store


def _simulate(case, engine, rounds=2):
    data, _, store = case
    return fl.simulate(
        lifelong(LAM, mu=MU),
        data,
        fl.models.digits_mlp,
        rounds=rounds,
        fraction=0.5,
        local=LOCAL,
        seed=1,
        engine=engine,
        eval_clients=False,
        client_states=store,
    ).final_state


def test_vectorized_equals_sequential_with_each_clients_own_fisher(case):
    _, module, _ = case
    start = flatten_params(module)
    sequential = _simulate(case, "sequential").params
    vectorized = _simulate(case, "vectorized").params
    drift = float((vectorized - sequential).norm() / (sequential - start).norm())
    assert drift < 1e-4
    # and the Fisher matters: without it (plain FedProx) the model ends elsewhere
    data, _, _ = case
    prox = fl.simulate(
        fl.fedprox(MU), data, fl.models.digits_mlp, rounds=2, fraction=0.5, local=LOCAL,
        seed=1, engine="sequential", eval_clients=False,
    ).final_state.params  # fmt: skip
    assert float((prox - sequential).norm() / (sequential - start).norm()) > 1e-2


def test_one_engine_round_equals_the_studys_hand_driven_round(case):
    data, module, store = case
    algorithm = lifelong(LAM, mu=MU)
    spec, bspec = param_spec(module), buffer_spec(module)
    objective = make_objective(module, spec, bspec, terms=algorithm.program.terms)
    state = server_init(algorithm, flatten_params(module), flatten_buffers(module), clients=store)
    plans = plans_for_round(data.num_clients, 0.5, seed=1, round=0)
    results = [
        train_client(
            plan,
            data.client_batch(plan.client_id),
            state.params,
            state.buffers,
            objective=objective,
            settings=LOCAL,
            context=ewc_context(store, plan.client_id, state.params),  # the study's way
        )
        for plan in plans
    ]
    by_hand = server_update(algorithm, state, results, settings=LOCAL, num_clients=8)
    engine = _simulate(case, "sequential", rounds=1)
    torch.testing.assert_close(engine.params, by_hand.params, rtol=0, atol=0)
    assert any(p.client_id < 6 for p in plans)  # someone trained with a Fisher


def test_the_fisher_stays_in_the_plan_and_store_never_in_what_is_sent(case):
    data, module, store = case
    algorithm = lifelong(LAM, mu=MU)
    state = server_init(algorithm, flatten_params(module), flatten_buffers(module), clients=store)
    plans = prepare_plans(algorithm, state, plans_for_round(8, 1.0, seed=1, round=0))
    for plan in plans:
        if plan.client_id < 6:
            assert plan.extras is not None
            assert plan.extras[EWC_FISHER] is store[plan.client_id][EWC_FISHER]
        else:
            assert plan.extras is None
        assert plan.correction is None
    final = _simulate(case, "sequential", rounds=1)
    assert final.algorithm is None  # no server-side state of the algorithm
    for k, own in final.clients.items():  # the store holds what it held, nothing new
        assert set(own) == {EWC_FISHER, EWC_ANCHOR}
        torch.testing.assert_close(own[EWC_FISHER], store[k][EWC_FISHER], rtol=0, atol=0)
    # what a client returns is the update and its counts: no tensor the size of the Fisher
    # besides the update itself
    objective = make_objective(module, param_spec(module), buffer_spec(module),
                               terms=algorithm.program.terms)  # fmt: skip
    plan = plans[0]
    result = train_client(plan, data.client_batch(plan.client_id), state.params, state.buffers,
                          objective=objective, settings=LOCAL,
                          context=ewc_context(store, plan.client_id, state.params))  # fmt: skip
    assert result.state_report is None


def test_bad_coefficients_are_config_errors_naming_the_field():
    with pytest.raises(ConfigError, match=r"algorithm\.lam"):
        lifelong(-1.0)
    with pytest.raises(ConfigError, match=r"algorithm\.mu"):
        lifelong(1.0, mu=-0.1)


def test_with_lambda_and_mu_zero_it_is_fedavg(case):
    data, _, store = case
    kwargs = dict(rounds=1, fraction=0.5, local=LOCAL, seed=1, engine="sequential",
                  eval_clients=False)  # fmt: skip
    ours = fl.simulate(lifelong(0.0), data, fl.models.digits_mlp, client_states=store, **kwargs)
    plain = fl.simulate(fl.fedavg(), data, fl.models.digits_mlp, **kwargs)
    torch.testing.assert_close(ours.final_state.params, plain.final_state.params, rtol=0, atol=0)
