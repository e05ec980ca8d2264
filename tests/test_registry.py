"""The registry: a factory registers with one line and is usable from YAML at once; the
README's table and the error messages come from it."""

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import pytest
import torch
from annotated_types import Ge, Le

import fedloom as fl
from fedloom.config import build_algorithm, load_config, register_algorithm
from fedloom.config.docs import registry_table
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.registry import REGISTRY

README = Path(__file__).parents[1] / "README.md"


def damped_fedavg(
    damping: Annotated[float, Ge(0), Le(1)] = 0.5,
    *,
    server_lr: float = 1.0,
    weighting: str = "examples",
) -> fl.Algorithm:
    """FedAvg whose server step is damped by a factor."""
    return replace(fl.fedavg(server_lr=server_lr * damping, weighting=weighting), name="damped")


@pytest.fixture
def damped():
    entry = register_algorithm("damped", damped_fedavg)
    yield entry
    REGISTRY.unregister("algorithm", "damped")


SHORT = [
    "rounds=2",
    "data.num_clients=6",
    "model.name=digits_mlp",
    "client.epochs=1",
    "engine=sequential",
    "output.checkpoint=false",
]


def test_a_registered_factory_runs_from_yaml_with_its_own_options(damped, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algorithm: {name: damped, damping: 0.25}\n")
    config = load_config(path, SHORT)
    assert config.algorithm.name == "damped" and config.algorithm.damping == 0.25
    assert config.server.lr == 1.0  # the factory's own default, shown when resolved
    assert build_algorithm(config).name == "damped"
    damped_run = simulate_config(config)
    plain = simulate_config(load_config(None, [*SHORT, "server.lr=0.25"]))
    assert torch.equal(damped_run.final_state.params, plain.final_state.params)
    assert load_config(None, ["algorithm=damped"]).algorithm.damping == 0.5


def test_a_registered_factory_gets_validated_options(damped):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["algorithm=damped", "algorithm.damping=2"])
    assert info.value.problems == [
        "algorithm.damping: Input should be less than or equal to 1 (got 2)"
    ]
    with pytest.raises(ConfigError) as info:
        load_config(None, ["algorithm=damped", "algorithm.dampening=0.1"])
    assert info.value.problems == [
        "algorithm.dampening: unknown key; allowed keys here: name, damping"
    ]


def test_names_are_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("fedavg", damped_fedavg)
    with pytest.raises(KeyError, match="unknown algorithm 'nope'; registered: fedavg"):
        REGISTRY.unregister("algorithm", "nope")


def test_an_unregistered_name_is_a_config_error_listing_the_registered_ones(damped):
    REGISTRY.unregister("algorithm", "damped")
    with pytest.raises(ConfigError, match="unknown algorithm 'damped'; registered: fedavg"):
        load_config(None, ["algorithm=damped"])
    register_algorithm("damped", damped_fedavg)  # for the fixture's clean-up


def test_readme_table_is_the_registry():
    """The README's table of names is generated (python -m fedloom.config.docs)."""
    text = README.read_text()
    start = text.index("<!-- registry-table:start -->\n") + len("<!-- registry-table:start -->\n")
    end = text.index("<!-- registry-table:end -->")
    assert text[start:end] == registry_table()


def test_a_registered_engine_runs_from_a_config_and_an_unknown_one_is_named():
    from fedloom.config import register_engine
    from fedloom.sim import SequentialExecutor

    fitted = []

    class Counting(SequentialExecutor):
        def fit(self, plans, params, buffers, context):
            fitted.append(len(plans))
            return super().fit(plans, params, buffers, context)

    def counting(module, data, settings, *, program=None, task=None, workers=None):
        """The sequential engine, counting the clients it trains."""
        return Counting(module, data, settings, program=program, task=task)

    register_engine("counting", counting)
    try:
        config = load_config(None, [*SHORT, "engine=counting"])
        counted = simulate_config(config)
        reference = simulate_config(load_config(None, SHORT))
        assert fitted == [3, 3]  # 2 rounds of half of 6 clients
        assert torch.equal(counted.final_state.params, reference.final_state.params)
        assert "| engine | `counting` |  | The sequential engine, counting" in registry_table()
    finally:
        REGISTRY.unregister("engine", "counting")
    with pytest.raises(ConfigError, match="unknown engine 'counting'; registered: auto, seq"):
        load_config(None, ["engine=counting"])
