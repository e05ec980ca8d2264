"""The process engine with real worker processes."""

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fedloom as fl
from fedloom.client import LocalContext, LocalTraining
from fedloom.errors import FedloomError
from fedloom.params import flatten_params
from fedloom.sim import ProcessExecutor
from fedloom.sim.process import balance
from fedloom.types import ClientPlan


def test_balance_deals_longest_first_to_the_least_loaded():
    assert balance([5, 1, 4, 2], 2) == [[0, 1], [2, 3]]  # loads 6 and 6
    shares = balance([10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2)
    assert shares == [[0], list(range(1, 11))]  # the big client alone
    assert balance([3], 4) == [[0], [], [], []]
    everyone = sorted(i for share in balance(list(range(1, 30)), 3) for i in share)
    assert everyone == list(range(29))


def test_process_pool_matches_sequential_and_stops_cleanly(worker_case):
    case = worker_case
    params, plans, context, expected = case.params, case.plans, case.context, case.expected
    with ProcessExecutor(case.module, case.data, case.local, num_workers=2) as pool:
        assert pool.inner_engines == ["VectorizedExecutor", "VectorizedExecutor"]
        processes = list(pool._processes)
        for _ in range(2):  # the data went once; rounds reuse the workers
            got = pool.fit(plans, params, {}, context)
            assert [r.client_id for r in got] == [p.client_id for p in plans]
            for a, b in zip(expected, got, strict=True):
                assert (a.num_steps, a.num_example_passes) == (b.num_steps, b.num_example_passes)
                assert torch.allclose(a.update, b.update, atol=1e-6, rtol=0)
    assert all(p.poll() is not None for p in processes)  # the workers exited


def test_a_failing_worker_reports_its_traceback(unequal_digits):
    module = fl.models.digits_mlp()
    params = flatten_params(module)
    pool = ProcessExecutor(module, unequal_digits, LocalTraining(), num_workers=1)
    try:
        with pytest.raises(FedloomError, match="plans name clients \\[999\\]"):
            pool.fit([ClientPlan(client_id=999, round=0, seed=1)], params, {}, LocalContext(params))
        wrong = torch.zeros(5)  # parameters of another model: only the worker can tell
        plan = ClientPlan(client_id=0, round=0, seed=1)
        with pytest.raises(
            FedloomError, match="failed during training(.|\\n)*made for another model"
        ):
            pool.fit([plan], wrong, {}, LocalContext(wrong))
    finally:
        pool.close()
    pool.close()  # idempotent


def test_simulate_with_the_process_engine(unequal_digits):
    def run(engine):
        return fl.simulate(
            fl.fedavg(),
            unequal_digits,
            fl.models.digits_mlp,
            rounds=2,
            fraction=0.5,
            local=LocalTraining(epochs=1, batch_size=10, lr=0.1),
            engine=engine,
            workers=2,
            eval_clients=False,
        )

    a, b = run("process"), run("sequential")
    moved = (
        b.final_state.params
        - flatten_params(fl.simulation.initial_module(fl.models.digits_mlp, seed=0))
    ).norm()
    assert float((a.final_state.params - b.final_state.params).norm() / moved) < 1e-5
    assert np.isfinite(a.reports[-1].metrics["test_accuracy"])


def _exposed(pid: int, key: bytes) -> list[str]:
    """Where worker ``pid`` shows the key, or its variable name, to any process of the user."""
    needles = {
        "the key": key,
        "the key in hex": key.hex().encode(),
        "the key in HEX": key.hex().upper().encode(),
        "FEDLOOM_WORKER_AUTHKEY": b"FEDLOOM_WORKER_AUTHKEY",
    }
    found = []
    for part in ("environ", "cmdline"):
        seen = Path(f"/proc/{pid}/{part}").read_bytes()
        found += [f"{part} holds {name}" for name, needle in needles.items() if needle in seen]
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_workers_key_is_in_no_environment_or_command_line(worker_case):
    """/proc/PID/environ and cmdline are readable by every process of the same user: a key
    there would let any of them connect to the pool, or pose as it, and exchange pickles
    (code execution). The key goes down each worker's stdin pipe instead; replacements too.
    """
    case = worker_case
    with ProcessExecutor(case.module, case.data, case.local, num_workers=2) as pool:
        key = pool._authkey
        assert len(key) >= 16
        assert {w: _exposed(p.pid, key) for w, p in enumerate(pool._processes)} == {0: [], 1: []}
        os.kill(pool._processes[1].pid, signal.SIGKILL)
        pool._processes[1].wait()
        got = pool.fit(case.plans, case.params, {}, case.context)  # replaces worker 1
        assert _exposed(pool._processes[1].pid, key) == []
    for a, b in zip(case.expected, got, strict=True):  # the pool still works, and equally
        assert torch.allclose(a.update, b.update, atol=1e-6, rtol=0)
