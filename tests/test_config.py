"""Config validation: every bad value is one line naming the field and what is allowed."""

import pytest
import yaml

from fedloom.cli import main
from fedloom.config import RunConfig, apply_overrides, load_config
from fedloom.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("colour=blue", "colour: unknown key; allowed keys here: name, seed, rounds"),
        (
            "client.learning_rate=0.1",
            "client.learning_rate: unknown key; allowed keys here: epochs",
        ),
        (
            "server.fraction=1.5",
            "server.fraction: Input should be less than or equal to 1 (got 1.5)",
        ),
        ("server.fraction=0", "server.fraction: Input should be greater than 0 (got 0)"),
        ("client.epochs=-1", "client.epochs: Input should be greater than or equal to 1 (got -1)"),
        ("data.dataset=cifar", "data.dataset: Input should be 'digits', 'mnist' or 'synthetic'"),
        (
            "data.partition=zipf",
            "data.partition: Input tag 'zipf' found using 'kind' does not match any of the "
            "expected tags: 'iid', 'shards', 'dirichlet', 'quantity', 'natural'",
        ),
        (
            "data.partition.alpha=-2",
            "data.partition.dirichlet.alpha: Input should be greater than 0",
        ),
        (
            "client.batch_size=0",
            "client.batch_size: Input should be greater than or equal to 1 (got 0); "
            "or Input should be 'full' (got 0)",
        ),
        (
            "data.partition.shards_per_client=3",
            "data.partition.dirichlet.shards_per_client: unknown key; allowed keys here: kind, alpha",
        ),
        ("algorithm=fedmagic", "algorithm.name: Input should be 'fedavg' or 'fedsgd'"),
    ],
)
def test_bad_values_name_the_field(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert len(info.value.problems) == 1
    assert expected in info.value.problems[0]


@pytest.mark.parametrize(
    "override",
    [
        "colour=blue",
        "server.fraction=1.5",
        "client.epochs=-1",
        "data.dataset=cifar",
        "data.partition=zipf",
    ],
)
def test_cli_bad_config_is_one_line_and_exit_code_2(override, capsys):
    assert main(["run", "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedloom: config error: ")


def test_overrides_parse_yaml_values_and_shorthands():
    raw = apply_overrides(
        {},
        [
            "rounds=7",
            "data.partition=shards",
            "data.partition.shards_per_client=3",
            "client.batch_size=full",
            "eval.clients=false",
        ],
    )
    config = RunConfig.from_dict(raw)
    assert config.rounds == 7
    assert config.data.partition.kind == "shards" and config.data.partition.shards_per_client == 3
    assert config.client.batch_size == "full" and config.eval.clients is False
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["rounds"])


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "rounds: 3\ndata:\n  dataset: mnist\n  partition: {kind: shards, shards_per_client: 2}\n"
    )
    config = load_config(path, ["seed=4"])
    assert (config.rounds, config.seed, config.data.dataset) == (3, 4, "mnist")
    again = RunConfig.from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_defaults_are_the_documented_default_job():
    config = RunConfig()
    assert config.data.dataset == "digits" and config.data.num_clients == 20
    assert config.data.partition.kind == "dirichlet" and config.data.partition.alpha == 0.5
    assert config.algorithm.name == "fedavg"
