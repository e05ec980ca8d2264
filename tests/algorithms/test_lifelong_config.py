"""Lifelong EWC from YAML: `fedloom run` with a task sequence and the lifelong algorithm."""

import json

import pytest
import yaml

from fedloom.cli import main
from fedloom.config import RunConfig
from fedloom.errors import ConfigError

TINY = """
name: lifelong-tiny
rounds: 4
engine: sequential
data:
  dataset: digits
  num_clients: 4
  partition: iid
  task_sequence: {tasks: [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], rounds_per_task: 2}
model: {name: digits_mlp}
client: {epochs: 1, batch_size: 20, lr: 0.1}
server: {fraction: 1.0}
algorithm: {name: lifelong, lam: 100.0, mu: 0.1, fisher_examples: 50, fisher_cap: 0.05}
eval: {clients: false}
"""


def test_fedloom_run_goes_through_the_task_sequence_with_ewc(tmp_path):
    config = tmp_path / "lifelong.yaml"
    config.write_text(TINY)
    code = main(["run", "--no-progress", "--config", str(config), "--runs-dir", str(tmp_path)])
    assert code == 0
    run_dir = tmp_path / "lifelong-tiny"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4
    # after the first task only digits 0-4 were trained: at most their half of the test set
    # (about 0.5) can be right, and the model has learned most of it
    assert 0.3 < records[1]["test_accuracy"] < 0.55
    assert all(record["test_loss"] < 10 for record in records)  # the penalty stayed stable
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["algorithm"]["lam"] == 100.0
    assert resolved["data"]["task_sequence"]["rounds_per_task"] == 2


def test_the_default_fingerprint_leaves_the_task_sequence_out():
    plain = RunConfig()
    with_sequence = RunConfig.model_validate(
        {"data": {"task_sequence": {"tasks": [[0], [1]], "rounds_per_task": 1}}}
    )
    assert plain.fingerprint() != with_sequence.fingerprint()


def test_a_negative_lambda_names_algorithm_lam(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY.replace("lam: 100.0", "lam: -1.0"))
    with pytest.raises(ConfigError, match=r"algorithm\.lam"):
        from fedloom.experiment import run_experiment

        run_experiment(RunConfig.model_validate(yaml.safe_load(config.read_text())))


def test_the_grpc_server_refuses_lifelong_learning_with_a_config_error():
    pytest.importorskip("grpc")
    from fedloom.net.deploy import serve

    config = RunConfig.model_validate(yaml.safe_load(TINY))
    with pytest.raises(ConfigError, match=r"data\.task_sequence / algorithm: .*simulation only"):
        serve(config, access=None, credentials=None)  # refused before anything listens
