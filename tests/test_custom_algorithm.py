"""examples/custom_algorithm.py: an algorithm defined outside the package (FedExP),
registered with one line, runs from Python and from YAML with the same numbers."""

import importlib.util
from pathlib import Path

import pytest
import torch

import fedloom as fl
from fedloom.aggregate import aggregate_stack
from fedloom.config import build_algorithm, load_config
from fedloom.errors import ConfigError
from fedloom.experiment import simulate_config
from fedloom.registry import REGISTRY

EXAMPLE = Path(__file__).parents[1] / "examples" / "custom_algorithm.py"
SETUP = ["rounds=3", "data.num_clients=8", "model.name=digits_mlp", "client.epochs=1"]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_algorithm_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # registers "fedexp"
    yield module
    REGISTRY.unregister("algorithm", "fedexp")


def test_fedexp_step_is_the_papers_extrapolation(example):
    """Two clients, D_1 = (2, 0), D_2 = (-1, 0), equal weights: D = (0.5, 0), |D|^2 = 0.25,
    mean |D_k|^2 = 2.5, so the step is 2.5 / (2 (0.25 + 0.001)) = 4.98 times D."""
    updates = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    step, _ = aggregate_stack(example.fedexp().aggregation, updates, torch.tensor([1.0, 1.0]))
    expected = 2.5 / (2 * (0.25 + 1e-3)) * 0.5
    assert step.tolist() == pytest.approx([expected, 0.0], rel=1e-6)
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # no spread: plain FedAvg's step
    step, _ = aggregate_stack(example.fedexp().aggregation, agreeing, torch.tensor([1.0, 1.0]))
    assert step.tolist() == [1.0, 0.0]


def test_fedexp_runs_the_same_from_python_and_from_yaml(example, tmp_path):
    path = tmp_path / "fedexp.yaml"
    path.write_text("algorithm: {name: fedexp, eps: 0.01}\n")
    config = load_config(path, SETUP)
    assert build_algorithm(config).name == "fedexp"
    from_yaml = simulate_config(config)
    data = fl.federate(fl.load_digits(), fl.data.Dirichlet(8, 0.5), holdout_fraction=0.1)
    from_python = fl.simulate(
        example.fedexp(eps=0.01), data, fl.models.digits_mlp, rounds=3, fraction=0.5,
        local=fl.LocalTraining(epochs=1, batch_size=10, lr=0.1),
    )  # fmt: skip
    assert torch.equal(from_yaml.final_state.params, from_python.final_state.params)


def test_fedexp_options_are_validated_from_its_signature(example):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["algorithm=fedexp", "algorithm.eps=0"])
    assert info.value.problems == ["algorithm.eps: Input should be greater than 0 (got 0)"]
