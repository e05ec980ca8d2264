"""A failing client does not kill the run, on every in-process engine and the process pool.

The failures are real: a client whose labels are out of range (its cross-entropy raises) and
a model that SIGKILLs its worker process when it meets a marked client (see ``_faults``).
"""

import logging

import pytest
import torch

import fedloom as fl
from _faults import break_labels, dying_digits_mlp, mark_client
from fedloom.client import LocalContext, LocalTraining
from fedloom.data import IID, FederatedDataset, federate
from fedloom.engine import plans_for_round
from fedloom.errors import ClientError
from fedloom.params import flatten_params
from fedloom.sim import IsolatedExecutor, ProcessExecutor, SequentialExecutor, make_executor
from fedloom.sim.isolation import error_summary
from fedloom.sim.process import split_cohort
from fedloom.simulation import initial_module
from fedloom.types import ClientFailure, ClientResult

BROKEN = 5  # the last of 6 clients: a run without it keeps every other client's id and seed
LOCAL = LocalTraining(epochs=1, batch_size=10, lr=0.1, momentum=0.5)
OUT_OF_BOUNDS = "IndexError: Target 10 is out of bounds."


@pytest.fixture(scope="module")
def six(digits) -> FederatedDataset:
    return federate(digits, IID(6), seed=1)


def _without_last(data: FederatedDataset) -> FederatedDataset:
    return FederatedDataset(data.dataset, data.client_train[:-1], data.client_holdout[:-1])


def _run(data, engine, *, rounds=2, on_client_error="skip", model=fl.models.digits_mlp):
    return fl.simulate(
        fl.fedavg(),
        data,
        model,
        rounds=rounds,
        fraction=1.0,
        local=LOCAL,
        engine=engine,
        workers=2,
        eval_clients=False,
        on_client_error=on_client_error,
    )


def _moved(history) -> float:
    start = flatten_params(initial_module(fl.models.digits_mlp, seed=0))
    return float((history.final_state.params - start).norm())


def test_error_summary_is_type_and_first_line():
    assert error_summary(ValueError("bad label\nmore")) == "ValueError: bad label"
    assert error_summary(KeyError(3)) == "KeyError: 3"
    assert error_summary(RuntimeError()) == "RuntimeError"
    assert len(error_summary(ValueError("x" * 1000))) == 300


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_a_raising_client_fails_alone_and_the_others_train_as_without_it(six, engine):
    module = fl.models.digits_mlp()
    params = flatten_params(module)
    plans = plans_for_round(6, 1.0, seed=0, round=3)
    buffers = {p.client_id: torch.zeros(0) for p in plans}
    context = LocalContext(params)
    executor = make_executor(engine, module, break_labels(six, BROKEN), LOCAL)
    assert isinstance(executor, SequentialExecutor if engine == "sequential" else IsolatedExecutor)
    got = executor.fit(plans, params, buffers, context)
    clean = SequentialExecutor(module, six, LOCAL).fit(plans[:-1], params, buffers, context)
    assert got[-1] == ClientFailure(BROKEN, OUT_OF_BOUNDS, round=3)
    assert all(isinstance(r, ClientResult) for r in got[:-1])
    for a, b in zip(got[:-1], clean, strict=True):
        assert a.client_id == b.client_id and torch.equal(a.update, b.update)


def test_the_isolation_costs_nothing_without_a_failure(six):
    def reference():
        raise AssertionError("the reference engine is built only after a failure")

    cohort = make_executor("vectorized", fl.models.digits_mlp(), six, LOCAL)
    assert isinstance(cohort, IsolatedExecutor)
    executor = IsolatedExecutor(cohort.cohort, reference)
    params = flatten_params(fl.models.digits_mlp())
    plans = plans_for_round(6, 1.0, seed=0, round=0)
    results = executor.fit(plans, params, {}, LocalContext(params))
    assert [r.client_id for r in results] == list(range(6))
    assert all(isinstance(r, ClientResult) for r in results)


@pytest.mark.parametrize(
    "engine", ["sequential", "vectorized", pytest.param("process", marks=pytest.mark.slow)]
)
def test_a_run_with_a_raising_client_equals_the_run_without_it(six, engine, caplog):
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = _run(break_labels(six, BROKEN), engine)
    reference = _run(_without_last(six), "sequential")
    for report in history.reports:
        assert (report.metrics["num_failures"], report.metrics["num_results"]) == (1.0, 5.0)
    assert f"round 2: client {BROKEN} failed: {OUT_OF_BOUNDS}" in caplog.text
    a, b = history.final_state.params, reference.final_state.params
    if engine == "process":  # the healthy share is vectorized: equal to float32 round-off
        assert float((a - b).norm()) / _moved(reference) < 1e-5
    else:  # the vectorized cohort that failed was retrained with the sequential engine
        assert torch.equal(a, b)


def test_abort_stops_at_the_first_failure_and_names_it(six):
    with pytest.raises(ClientError, match=f"round 1: client 5 failed: {OUT_OF_BOUNDS}") as caught:
        _run(break_labels(six, BROKEN), "vectorized", on_client_error="abort")
    assert (caught.value.client_id, caught.value.round) == (BROKEN, 1)
    assert "server.on_client_error" in str(caught.value)
    with pytest.raises(ValueError, match="on_client_error must be one of skip, abort"):
        _run(six, "sequential", on_client_error="ignore")


@pytest.mark.slow
def test_a_worker_killed_mid_round_costs_its_share_and_is_replaced(six):
    data = mark_client(six, BROKEN)
    module = dying_digits_mlp()
    params = flatten_params(module)
    plans = plans_for_round(6, 1.0, seed=0, round=0)
    buffers = {p.client_id: torch.zeros(0) for p in plans}
    context = LocalContext(params)
    doomed = next(s for s in split_cohort(plans, buffers, data.client_sizes, 2) if BROKEN in
                  [p.client_id for p in s.plans])  # fmt: skip
    expected = SequentialExecutor(module, data, LOCAL).fit(plans, params, buffers, context)
    with ProcessExecutor(module, data, LOCAL, num_workers=2) as pool:
        before = [p.pid for p in pool._processes]
        got = pool.fit(plans, params, buffers, context)
        failed = {r.client_id: r for r in got if isinstance(r, ClientFailure)}
        assert sorted(failed) == sorted(p.client_id for p in doomed.plans)
        reason = f"worker process {doomed.worker} died (signal 9, SIGKILL)"
        assert all(f.reason == reason and f.round == 0 for f in failed.values())
        after = [p.pid for p in pool._processes]
        assert after[doomed.worker] != before[doomed.worker]  # replaced
        assert after[1 - doomed.worker] == before[1 - doomed.worker]
        healthy = [p for p in plans if p.client_id != BROKEN]
        again = pool.fit(healthy, params, buffers, context)  # the new worker trains
    want = [r for r in expected if r.client_id != BROKEN]
    for a, b in zip(again, want, strict=True):
        assert isinstance(a, ClientResult) and a.client_id == b.client_id
        assert torch.allclose(a.update, b.update, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_run_whose_worker_is_killed_every_round_finishes(six, caplog):
    data = mark_client(six, BROKEN)
    plans = plans_for_round(6, 1.0, seed=0, round=0)
    doomed = next(s for s in split_cohort(plans, {}, data.client_sizes, 2) if BROKEN in
                  [p.client_id for p in s.plans])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="fedloom"):
        history = _run(data, "process", rounds=2, model=dying_digits_mlp)
    assert len(history.reports) == 2
    for report in history.reports:
        assert report.metrics["num_failures"] == len(doomed.plans)
        assert report.metrics["num_results"] == 6 - len(doomed.plans)
        assert "round_skipped" not in report.metrics
    assert caplog.text.count("died (signal 9, SIGKILL); starting a new one") == 2
    assert torch.isfinite(history.final_state.params).all()
