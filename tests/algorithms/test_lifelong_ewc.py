"""The lifelong algorithm (EWC + proximal) in the engine: each client trains with its own
Fisher and anchor from the client-state store, on every engine, exactly as the study's
hand-driven loop does, and none of it reaches the server."""

from dataclasses import replace

import pytest
import torch

import fedloom as fl
from fedloom.algorithms import prepare_plans, server_init, server_update
from fedloom.algorithms.lifelong import lifelong
from fedloom.client import LocalTraining, make_objective, train_client
from fedloom.client.ewc import diagonal_fisher, ewc_context, ewc_writes
from fedloom.client.store import with_writes
from fedloom.client.terms import EWC_ANCHOR, EWC_FISHER
from fedloom.data import IID, Dirichlet, federate
from fedloom.data.task_sequence import TaskSequence, task_data
from fedloom.engine import plans_for_round
from fedloom.errors import ConfigError
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.simulation import initial_module
from fedloom.tasks import take

LOCAL = LocalTraining(epochs=1, batch_size=16, lr=0.1)
LAM, MU = 50.0, 0.1


def _given(lam, **options):
    """The algorithm with the clients' Fisher and anchor given in the store (no task
    sequence, so nothing estimates them)."""
    return replace(lifelong(lam, **options), fisher=None)


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
        _given(LAM, mu=MU),
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
        fl.fedprox(MU),
        data,
        fl.models.digits_mlp,
        rounds=2,
        fraction=0.5,
        local=LOCAL,
        seed=1,
        engine="sequential",
        eval_clients=False,
    ).final_state.params
    assert float((prox - sequential).norm() / (sequential - start).norm()) > 1e-2


def test_one_engine_round_equals_the_studys_hand_driven_round(case):
    data, module, store = case
    algorithm = _given(LAM, mu=MU)
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
    algorithm = _given(LAM, mu=MU)
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
    objective = make_objective(
        module, param_spec(module), buffer_spec(module), terms=algorithm.program.terms
    )
    plan = plans[0]
    result = train_client(
        plan,
        data.client_batch(plan.client_id),
        state.params,
        state.buffers,
        objective=objective,
        settings=LOCAL,
        context=ewc_context(store, plan.client_id, state.params),
    )
    assert result.state_report is None


def test_bad_coefficients_are_config_errors_naming_the_field():
    with pytest.raises(ConfigError, match=r"algorithm\.lam"):
        lifelong(-1.0)
    with pytest.raises(ConfigError, match=r"algorithm\.mu"):
        lifelong(1.0, mu=-0.1)


def test_with_lambda_and_mu_zero_it_is_fedavg(case):
    data, _, store = case
    kwargs = dict(
        rounds=1, fraction=0.5, local=LOCAL, seed=1, engine="sequential", eval_clients=False
    )
    ours = fl.simulate(_given(0.0), data, fl.models.digits_mlp, client_states=store, **kwargs)
    plain = fl.simulate(fl.fedavg(), data, fl.models.digits_mlp, **kwargs)
    torch.testing.assert_close(ours.final_state.params, plain.final_state.params, rtol=0, atol=0)


# --- task sequences: the engine moves clients through the tasks and estimates the Fisher ---

SEQUENCE_LOCAL = LocalTraining(epochs=1, batch_size=20, lr=0.1)


def _by_hand(data, sequence, algorithm, rounds, seed):
    """The study's loop (fedloom.studies.lifelong.lifelong_run) with the engine's plans:
    every client trains on its rows of the round's task with its own EWC entries; after each
    task's last round every client estimates its Fisher at the global model."""
    module = initial_module(fl.models.digits_mlp, seed=seed)
    spec, bspec = param_spec(module), buffer_spec(module)
    objective = make_objective(module, spec, bspec, terms=algorithm.program.terms)
    plain = make_objective(module, spec, bspec)
    state = server_init(algorithm, flatten_params(module), flatten_buffers(module))
    for t in range(rounds):
        view = task_data(data, sequence, sequence.task_at(t))
        results = [
            train_client(
                plan,
                view.client_batch(plan.client_id),
                state.params,
                state.buffers,
                objective=objective,
                settings=SEQUENCE_LOCAL,
                context=ewc_context(state.clients, plan.client_id, state.params),
            )
            for plan in plans_for_round(data.num_clients, 1.0, seed=seed, round=t)
        ]
        state = server_update(
            algorithm, state, results, settings=SEQUENCE_LOCAL, num_clients=data.num_clients
        )
        if sequence.task_at(t + 1) != sequence.task_at(t) or t + 1 == rounds:
            writes = {
                k: ewc_writes(
                    state.clients.get(k, {}),
                    diagonal_fisher(
                        plain, state.params, state.buffers, take(view.client_batch(k), slice(0, 30))
                    ),
                    state.params,
                    max_value=algorithm.fisher.cap,
                )
                for k in range(data.num_clients)
            }
            state = replace(state, clients=with_writes(state.clients, writes))
    return state


@pytest.fixture(scope="module")
def sequence_case(digits):
    data = federate(digits, IID(4), seed=0)
    sequence = TaskSequence(((0, 1, 2), (3, 4, 5), (6, 7, 8, 9)), rounds_per_task=2)
    algorithm = lifelong(LAM, mu=MU, fisher_examples=30, fisher_cap=0.5 / (0.1 * LAM))
    return data, sequence, algorithm


def _engine(sequence_case, engine):
    data, sequence, algorithm = sequence_case
    return fl.simulate(
        algorithm,
        data,
        fl.models.digits_mlp,
        rounds=6,
        fraction=1.0,
        local=SEQUENCE_LOCAL,
        seed=2,
        engine=engine,
        eval_clients=False,
        task_sequence=sequence,
    ).final_state


def test_the_engine_through_a_task_sequence_equals_the_hand_driven_loop(sequence_case):
    data, sequence, algorithm = sequence_case
    engine = _engine(sequence_case, "sequential")
    hand = _by_hand(data, sequence, algorithm, rounds=6, seed=2)
    torch.testing.assert_close(engine.params, hand.params, rtol=0, atol=0)
    for k in range(data.num_clients):  # every client holds its Fisher of all three tasks
        torch.testing.assert_close(
            engine.clients[k][EWC_FISHER], hand.clients[k][EWC_FISHER], rtol=0, atol=0
        )
        cap = torch.tensor(algorithm.fisher.cap)  # float32
        assert torch.equal(engine.clients[k][EWC_FISHER].max(), cap)  # the cap is reached


def test_the_vectorized_engine_follows_the_task_sequence_too(sequence_case):
    data, sequence, algorithm = sequence_case
    start = flatten_params(initial_module(fl.models.digits_mlp, seed=2))
    sequential = _engine(sequence_case, "sequential").params
    vectorized = _engine(sequence_case, "vectorized").params
    assert float((vectorized - sequential).norm() / (sequential - start).norm()) < 1e-4


def test_an_ewc_run_without_a_task_sequence_and_an_empty_task_are_config_errors(digits):
    data = federate(digits, IID(4), seed=0)
    with pytest.raises(ConfigError, match=r"data\.task_sequence"):
        fl.simulate(lifelong(1.0), data, fl.models.digits_mlp, rounds=1, eval_clients=False)
    # labels 10 and 11 do not exist: no client holds data of task 1
    sequence = TaskSequence(((0, 1), (10, 11)), rounds_per_task=1)
    with pytest.raises(ConfigError, match=r"data\.task_sequence\.tasks\[1\]"):
        fl.simulate(
            lifelong(1.0),
            data,
            fl.models.digits_mlp,
            rounds=2,
            eval_clients=False,
            task_sequence=sequence,
        )


def test_the_process_engine_passes_each_clients_extras_too(case):
    """Its workers run the sequential engine on the plans they receive, extras included."""
    data, _, store = case
    kwargs = dict(
        rounds=1, fraction=0.5, local=LOCAL, seed=1, eval_clients=False, client_states=store
    )
    sequential = fl.simulate(
        _given(LAM, mu=MU), data, fl.models.digits_mlp, engine="sequential", **kwargs
    )
    process = fl.simulate(
        _given(LAM, mu=MU), data, fl.models.digits_mlp, engine="process", workers=2, **kwargs
    )
    torch.testing.assert_close(
        process.final_state.params, sequential.final_state.params, rtol=0, atol=1e-6
    )
