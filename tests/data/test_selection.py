"""Client selection: hand-computed cohorts for fixed seeds and losses, the default unchanged,
the cost of power-of-choice's loss queries counted, and bad settings named."""

import numpy as np
import pytest

from fedloom.config import RunConfig, build_run
from fedloom.data import sample_cohort
from fedloom.data.selection import (
    SELECTIONS,
    AvailabilitySelection,
    PowerOfChoice,
    UniformSelection,
    register_selection,
)
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.params import param_spec


def test_uniform_selection_is_the_default_sampling():
    for t in range(5):
        chosen = UniformSelection().select(30, 0.2, seed=4, round=t).client_ids
        assert np.array_equal(chosen, sample_cohort(30, 0.2, seed=4, round=t))


def test_power_of_choice_takes_the_highest_losses_of_its_candidates():
    losses = {k: (k * 7) % 10 / 10 for k in range(10)}  # 0, .7, .4, .1, .8, .5, .2, .9, .6, .3
    asked = []

    def query(ids):
        asked.append(list(ids))
        return [losses[k] for k in ids]

    # every client a candidate: the three highest losses, clients 7 (.9), 4 (.8) and 1 (.7)
    chosen = PowerOfChoice(d=10).select(10, 0.3, seed=0, round=0, losses=query)
    assert chosen.client_ids.tolist() == [1, 4, 7]
    assert chosen.metrics == {"selection_queries": 10.0} and asked == [list(range(10))]
    # d = m: the candidates are the cohort, whatever their losses
    asked.clear()
    chosen = PowerOfChoice(d=3).select(10, 0.3, seed=5, round=2, losses=query)
    assert chosen.client_ids.tolist() == asked[0] and len(asked[0]) == 3
    # ties go to the lower id; a client without data is never a weighted candidate
    flat = PowerOfChoice(d=4).select(
        5, 0.4, seed=1, round=0, losses=lambda ids: [1.0] * len(ids),
        sizes=np.array([10, 10, 0, 10, 10]),
    )  # fmt: skip
    assert flat.client_ids.tolist() == [0, 1]


def test_availability_selects_among_the_available_only():
    rule = AvailabilitySelection(probabilities=(1.0, 0.0, 1.0, 1.0, 0.0, 0.0))
    for t in range(4):
        chosen = rule.select(6, 0.5, seed=t, round=t)  # m = 3: exactly the three available
        assert chosen.client_ids.tolist() == [0, 2, 3]
        assert chosen.metrics == {"selection_available": 3.0}
    few = AvailabilitySelection(probabilities=(0.0, 1.0, 0.0, 0.0)).select(4, 0.5, seed=0, round=0)
    assert few.client_ids.tolist() == [1]  # fewer available than m: all of them
    # probability 0.5: about half available, m chosen among them
    counts = [
        AvailabilitySelection(probability=0.5).select(1000, 0.01, seed=2, round=t).metrics
        for t in range(20)
    ]
    available = np.mean([c["selection_available"] for c in counts])
    assert 470 < available < 530  # Binomial(1000, 0.5): mean 500, std 16


BASE = {
    "seed": 3,
    "rounds": 2,
    "data": {"dataset": "digits", "num_clients": 10, "partition": "iid"},
    "model": {"name": "digits_mlp"},
    "client": {"epochs": 1, "batch_size": 20, "lr": 0.05},
    "server": {"fraction": 0.3},
    "eval": {"clients": False},
}


def _config(selection, **server):
    return RunConfig.model_validate(
        {**BASE, "server": {**BASE["server"], "selection": selection, **server}}
    )


def test_power_of_choice_in_a_run_counts_its_queries():
    config = _config({"name": "power_of_choice", "d": 6})
    spec = build_run(config)
    history = simulate_config(config, spec=spec)
    num_params = param_spec(spec.module).num_params
    for report in history.reports:
        m = report.metrics
        assert m["num_clients"] == 3 and m["selection_queries"] == 6
        assert m["selection_bytes_down"] == 6 * 4 * num_params
        assert m["selection_bytes_up"] == 6 * 4


def test_an_explicit_uniform_selection_changes_nothing():
    plain = simulate_config(_config(None))
    uniform = simulate_config(_config({"name": "uniform"}))
    assert (plain.final_state.params == uniform.final_state.params).all()
    assert _config(None).fingerprint() == RunConfig.model_validate(BASE).fingerprint()


@pytest.mark.parametrize(
    ("selection", "server", "message"),
    [
        ({"name": "power_of_choice"}, {}, "server.selection.d: power_of_choice needs d"),
        ({"name": "power_of_choice", "d": 2}, {}, "server.selection.d: 2; must be between"),
        ({"name": "power_of_choice", "d": 11}, {}, "server.selection.d: 11"),
        ({"name": "uniform", "d": 4}, {}, "server.selection.d: applies to power_of_choice"),
        ({"name": "availability", "probabilities": [0.5] * 3}, {}, "3 values for 10 clients"),
        ({"name": "lottery"}, {}, "server.selection.name: 'lottery'; registered: uniform"),
        ({"name": "availability"}, {"sampling": "poisson"}, "server.sampling poisson"),
    ],
)
def test_bad_selection_is_a_config_error_naming_the_field(selection, server, message):
    with pytest.raises(ConfigError, match=message):
        build_run(_config(selection, **server))


def test_a_registered_rule_is_selectable_by_name():
    class Lowest:
        name, needs_losses = "lowest", False

        def __init__(self, count=1.0):
            self.count = int(count)

        def select(self, num_clients, fraction, *, seed, round, losses=None, sizes=None):
            from fedloom.data.selection import Selected

            return Selected(np.arange(self.count))

    register_selection("lowest", Lowest)
    try:
        config = _config({"name": "lowest", "options": {"count": 2}})
        history = simulate_config(config)
        assert [r.metrics["num_clients"] for r in history.reports] == [2, 2]
        with pytest.raises(ValueError, match="taken"):
            register_selection("lowest", Lowest)
    finally:
        SELECTIONS.pop("lowest")
