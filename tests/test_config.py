"""Config validation: every bad value is one line naming the field and what is allowed."""

from pathlib import Path

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
        ("data.dataset=cifar", "data.dataset: Input should be 'digits', 'mnist', 'synthetic'"),
        (
            "data.partition=zipf",
            "data.partition: unknown partition 'zipf'; registered: iid, shards, dirichlet, "
            "quantity, natural",
        ),
        (
            "data.partition.alpha=-2",
            "data.partition.alpha: Input should be greater than 0",
        ),
        (
            "client.batch_size=0",
            "client.batch_size: Input should be greater than or equal to 1 (got 0); "
            "or Input should be 'full' (got 0)",
        ),
        (
            "data.partition.shards_per_client=3",
            "data.partition.shards_per_client: unknown key; allowed keys here: kind, alpha",
        ),
        (
            "algorithm=fedmagic",
            "algorithm: unknown algorithm 'fedmagic'; registered: fedavg, fedsgd, fedprox, "
            "scaffold",
        ),
        ("algorithm.q=2", "algorithm.q: unknown key; allowed keys here: name"),
        ("model.name=resnet", "model.name: unknown model 'resnet'; registered: auto, mnist_2nn"),
        (
            "client.stragglers.policy=wait",
            "client.stragglers.policy: Input should be 'keep' or 'drop'",
        ),
        ("server.weighting=loss", "server.weighting: Input should be 'examples', 'uniform'"),
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


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "client.learning-rate=0.1",
            "client.learning-rate: unknown key; allowed keys here: epochs, steps",
        ),
        ("data.partition.min-size=3", "data.partition.min-size: unknown key; allowed keys here"),
        ("batch size=10", "batch size: unknown key; allowed keys here: name, seed, rounds"),
    ],
)
def test_an_unknown_key_that_is_not_an_identifier_is_named(override, expected):
    """Locations that are not identifiers were all dropped (to hide union members such as
    'constrained-int'), so `client.learning-rate` was reported as `client: unknown key` with
    the top level's keys. The unknown key itself is now always kept."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.problems[0].startswith(expected)


@pytest.mark.parametrize("override", ["client..lr=0.1", ".rounds=3", "data.=1", "client. .lr=1"])
def test_a_set_key_with_an_empty_part_is_refused(override):
    """`data.=1` used to report `data: unknown key` with the top level's keys."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.problems == [
        f"--set {override!r}: {override.partition('=')[0]!r} has an empty part; keys are "
        "dotted names, e.g. --set client.lr=0.05"
    ]


def test_invalid_yaml_is_one_line(tmp_path):
    """PyYAML's messages span lines; the CLI prints one line per problem."""
    with pytest.raises(ConfigError) as info:
        load_config(None, ["rounds=[1"])
    (problem,) = info.value.problems
    assert (
        problem.startswith("--set 'rounds=[1': value is not valid YAML (") and "\n" not in problem
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: [1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems[0].startswith(f"{bad}: not valid YAML (")
    assert "\n" not in info.value.problems[0]


@pytest.mark.parametrize(
    "value", ["!!int abc", "!!float x", "!!bool maybe", "!!timestamp 2020-99-99"]
)
def test_a_tagged_yaml_value_that_does_not_convert_is_a_config_error(value, tmp_path):
    """PyYAML raises ValueError / KeyError (not YAMLError) for these: they were tracebacks."""
    with pytest.raises(ConfigError, match=r"^--set 'rounds=.*': value is not valid YAML"):
        load_config(None, [f"rounds={value}"])
    path = tmp_path / "tagged.yaml"
    path.write_text(f"rounds: {value}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


@pytest.mark.parametrize("what", ["a-folder", "not-utf8", "under-a-file", "too-long"])
def test_an_unreadable_config_file_is_a_config_error(what, tmp_path):
    """A folder, a binary file or an impossible path given to --config were tracebacks
    (IsADirectoryError, UnicodeDecodeError, OSError)."""
    blocker = tmp_path / "binary.yaml"
    blocker.write_bytes(b"\xff\xfe\x00rounds: 3")
    path = {
        "a-folder": tmp_path,
        "not-utf8": blocker,
        "under-a-file": blocker / "run.yaml",
        "too-long": tmp_path / ("x" * 300),
    }[what]
    with pytest.raises(ConfigError, match=r"^config file .*: cannot read it \("):
        load_config(path)


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


def test_algorithm_sections_build_the_paper_algorithms():
    from fedloom.config import build_algorithm, build_local_work

    prox = load_config(None, ["algorithm.name=fedprox", "algorithm.mu=1"])
    algorithm = build_algorithm(prox)
    assert algorithm.name == "fedprox" and algorithm.program.proximal_mu == 1.0
    scaffold = load_config(None, ["algorithm=scaffold"])
    assert scaffold.server.weighting == "uniform"  # the paper's average, shown when resolved
    assert build_algorithm(scaffold).state is not None  # control variates
    adam = load_config(None, ["algorithm=fedadam", "algorithm.tau=0.01"])
    assert adam.server.lr == 0.01 and build_algorithm(adam).name == "fedadam"
    qffl = load_config(None, ["algorithm=qffl", "algorithm.q=5"])
    assert build_algorithm(qffl).aggregation.statistics == frozenset({"initial_loss"})
    with pytest.raises(ConfigError, match="qffl sets its own step size"):
        build_algorithm(load_config(None, ["algorithm=qffl", "server.lr=0.5"]))
    work = build_local_work(
        load_config(
            None,
            [
                "client.heterogeneity={low: 1, high: 4}",
                "client.stragglers={fraction: 0.9, policy: drop}",
            ],
        ).client
    )
    assert (work.low, work.high, work.straggler_fraction, work.drop_stragglers) == (1, 4, 0.9, True)


def test_robustness_sections_build_rules_trees_attacks_and_policies():
    from fedloom import aggregate
    from fedloom.config import build_algorithm, build_attack, build_policy

    krum = load_config(None, ["server.aggregator={name: krum, f: 2, m: 3}"])
    assert build_algorithm(krum, 20).aggregation.reduce == aggregate.Krum(2, 3)
    median = load_config(None, ["server.aggregator=median", "server.clip_norm=5"])
    clipped = build_algorithm(median, 20).aggregation
    assert clipped.per_client == (aggregate.clip(5.0),)
    assert clipped.reduce == aggregate.CoordinateMedian()
    tree = load_config(
        None,
        [
            "server.hierarchy={branching: [5, 2], aggregators: [median, mean, trimmed_mean]}",
        ],
    )
    hierarchical = build_algorithm(tree, 20).aggregation.reduce
    assert isinstance(hierarchical, aggregate.Hierarchical)
    assert hierarchical.root.aggregator == aggregate.TrimmedMean(0.1)
    assert hierarchical.root.clients() == list(range(20))
    with pytest.raises(ConfigError, match="need 3 rules"):
        build_algorithm(
            load_config(None, ["server.hierarchy={branching: [5, 2], aggregators: [median]}"]), 20
        )
    attack = build_attack(load_config(None, ["attack={kind: alie, fraction: 0.2}"]).attack)
    assert (attack.kind, attack.fraction, attack.z) == ("alie", 0.2, None)
    policy = build_policy(load_config(None, ["server.validation.max_norm=10"]).server)
    assert policy.max_norm == 10.0 and policy.min_updates == 1


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "server.aggregator=mode",
            "server.aggregator: unknown aggregator 'mode'; registered: mean, median",
        ),
        (
            "server.aggregator.f=-1",
            "server.aggregator.f: unknown key; allowed keys here: name",
        ),
        ("attack.kind=backdoor", "attack.kind: Input should be 'none', 'scaling'"),
        (
            "server.validation.max_norm=0",
            "server.validation.max_norm: Input should be greater than 0",
        ),
    ],
)
def test_bad_robustness_values_name_the_field(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in info.value.problems[0]


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("examples/*.yaml")))
def test_every_example_config_is_valid(path):
    from fedloom.config import build_algorithm

    config = load_config(path)
    assert build_algorithm(config, 100).name == config.algorithm.name


def test_on_client_error_is_skip_or_abort_and_not_part_of_the_fingerprint():
    default = load_config(None, [])
    abort = load_config(None, ["server.on_client_error=abort"])
    assert (default.server.on_client_error, abort.server.on_client_error) == ("skip", "abort")
    assert default.fingerprint() == abort.fingerprint()  # a resumed run may change its policy
    assert default.fingerprint() != load_config(None, ["server.fraction=0.2"]).fingerprint()
    with pytest.raises(ConfigError) as info:
        load_config(None, ["server.on_client_error=retry"])
    assert info.value.problems == [
        "server.on_client_error: Input should be 'skip' or 'abort' (got 'retry')"
    ]


@pytest.mark.parametrize(
    ("dataset", "model", "shape", "fitting"),
    [
        (
            "digits",
            "mnist_cnn",
            "(1, 8, 8)",
            "logistic_regression, digits_mlp, digits_cnn, digits_cnn_bn, digits_cnn_in",
        ),
        (
            "digits",
            "mnist_2nn",
            "(1, 8, 8)",
            "logistic_regression, digits_mlp, digits_cnn, digits_cnn_bn, digits_cnn_in",
        ),
        ("synthetic", "digits_cnn", "(60,)", "logistic_regression"),
        ("synthetic", "mnist_2nn", "(60,)", "logistic_regression"),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_a_config_error(dataset, model, shape, fitting):
    """`model.name=mnist_cnn` on 8x8 digits used to pass validation and fail deep inside the
    engine with a matmul shape error (after the run directory was made). The model is now
    tried on one example when the run is built: one line naming the field, the data's input
    shape and the models that fit."""
    from fedloom.config import build_run

    config = load_config(None, [f"data.dataset={dataset}", f"model.name={model}"])
    with pytest.raises(ConfigError) as info:
        build_run(config)
    (problem,) = info.value.problems
    assert problem.startswith(f"model.name: {model} does not fit the {dataset}")
    assert f"input shape {shape} and 10 classes" in problem
    assert problem.endswith(f"models that fit: {fitting}")


@pytest.mark.parametrize(
    ("dataset", "models"),
    [
        ("digits", ["auto", "digits_cnn", "digits_mlp", "logistic_regression"]),
        ("synthetic", ["auto", "logistic_regression"]),
        ("mnist", ["auto", "mnist_2nn", "mnist_cnn", "logistic_regression"]),
    ],
)
def test_models_that_fit_the_data_pass_and_leave_the_rng_alone(dataset, models, request):
    """The fit check must not reject a model that fits, nor move the global torch RNG: a
    run's initial weights depend only on its seed (initial_module forks the RNG too)."""
    import torch

    from fedloom.config import build_dataset, build_model

    data = request.getfixturevalue("mnist") if dataset == "mnist" else None
    for model in models:
        config = load_config(None, [f"data.dataset={dataset}", f"model.name={model}"])
        state = torch.get_rng_state()
        factory = build_model(config, data or build_dataset(config.data))
        assert torch.equal(torch.get_rng_state(), state), model
        assert factory() is not None


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.num_clients=5000", "data.partition: cannot give 5000 clients at least one of"),
        ("data.partition=natural", "data.partition: the natural partition needs a dataset"),
        ("server.aggregator={name: krum, f: 50}",
         "server.aggregator: krum needs at least 103 updates a round, but a round samples 10"),
    ],
)  # fmt: skip
def test_a_split_or_a_rule_the_data_cannot_have_is_a_config_error(
    setting, message, capsys, tmp_path
):
    """These once failed with exit 1 (the partition) or only in training (Krum's f)."""
    from fedloom.cli import main

    assert main(["run", "--set", "rounds=1", "--set", setting, "--runs-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["client.weight_decay=.inf", "attack.factor=.nan"])
def test_infinite_and_nan_numbers_are_config_errors(setting):
    """``.inf`` passed every lower bound (``ge=0``) and reached training as NaN."""
    from fedloom.errors import ConfigError

    with pytest.raises(ConfigError, match="Input should be a finite number"):
        load_config(None, [setting])
