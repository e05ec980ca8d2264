"""Heterogeneous local work and stragglers: deterministic, in range, and honoured."""

import pytest

import fedloom as fl
from fedloom.client import LocalTraining, plan_settings
from fedloom.engine import LocalWork, assign_work, plans_for_round


def _plans(num=20, round_=0):
    return plans_for_round(100, num / 100, seed=5, round=round_)


def test_uniform_work_leaves_plans_alone():
    plans = _plans()
    kept, dropped = assign_work(plans, LocalWork(), LocalTraining(epochs=3), seed=5)
    assert kept == plans and dropped == []


def test_heterogeneous_epochs_are_drawn_in_range_and_reproducibly():
    work = LocalWork(low=2, high=5)
    kept, _ = assign_work(_plans(), work, LocalTraining(epochs=5), seed=5)
    epochs = [p.epochs for p in kept]
    assert set(epochs) <= {2, 3, 4, 5} and len(set(epochs)) > 1
    again, _ = assign_work(_plans(), work, LocalTraining(epochs=5), seed=5)
    assert [p.epochs for p in again] == epochs
    other_round, _ = assign_work(_plans(round_=1), work, LocalTraining(epochs=5), seed=5)
    assert [p.epochs for p in other_round] != epochs


def test_work_drawn_once_per_client_stays_with_the_client():
    work = LocalWork(low=1, high=9, redraw="never")
    settings = LocalTraining(epochs=9)
    seen: dict[int, set[int]] = {}
    for round_ in range(5):
        kept, _ = assign_work(_plans(num=50, round_=round_), work, settings, seed=5)
        for plan in kept:
            seen.setdefault(plan.client_id, set()).add(plan.epochs)
    assert all(len(values) == 1 for values in seen.values())
    assert len({next(iter(v)) for v in seen.values()}) > 3


def test_stragglers_do_less_work_or_are_dropped():
    settings = LocalTraining(epochs=20)
    kept, dropped = assign_work(_plans(), LocalWork(straggler_fraction=0.9), settings, seed=5)
    assert len(kept) == 20 and dropped == []
    partial = [p.epochs for p in kept if p.epochs != 20]
    assert len(partial) == 18  # round(0.9 * 20) stragglers, each drawn from 1..19
    assert all(1 <= e <= 19 for e in partial)
    kept, dropped = assign_work(
        _plans(), LocalWork(straggler_fraction=0.9, drop_stragglers=True), settings, seed=5
    )
    assert len(kept) == 2 and len(dropped) == 18
    assert all(p.epochs == 20 for p in kept)


def test_steps_unit_and_plan_settings():
    settings = LocalTraining(steps=10, epochs=1)
    kept, _ = assign_work(_plans(), LocalWork(low=3, high=3), settings, seed=5)
    assert {p.steps for p in kept} == {3}
    assert plan_settings(settings, kept[0]).steps == 3


def test_bad_work_settings_are_clear_errors():
    with pytest.raises(ValueError, match="both low and high"):
        LocalWork(low=1)
    with pytest.raises(ValueError, match="1 <= low <= high"):
        LocalWork(low=4, high=2)
    with pytest.raises(ValueError, match="redraw"):
        LocalWork(low=1, high=2, redraw="sometimes")
    with pytest.raises(ValueError, match="straggler_fraction"):
        LocalWork(straggler_fraction=1.5)


def test_dropped_stragglers_are_counted_and_all_dropped_keeps_the_model(digits):
    data = fl.federate(digits, fl.data.IID(10), seed=0)
    history = fl.simulate(
        fl.fedavg(),
        data,
        fl.models.digits_mlp,
        rounds=2,
        fraction=0.5,
        work=LocalWork(straggler_fraction=1.0, drop_stragglers=True),
        eval_clients=False,
    )
    record = history.reports[-1].metrics
    assert record["num_stragglers_dropped"] == 5 and record["num_results"] == 0
    start = fl.params.flatten_params(fl.simulation.initial_module(fl.models.digits_mlp, seed=0))
    assert (history.final_state.params == start).all()
