"""The command line, run for real."""

import json
import os
import subprocess
import sys

import pytest

from fedloom.cli import main


def test_default_run_end_to_end(tmp_path):
    """`fedloom run` with no config: digits, 20 clients, Dirichlet 0.5, good accuracy."""
    env = {**os.environ, "COLUMNS": "120"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedloom.cli",
            "run",
            "--runs-dir",
            str(tmp_path),
            "--name",
            "default",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    run_dir = tmp_path / "default"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "model.safetensors",
        "summary.json",
        "accuracy.png",
        "client_accuracy.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 40
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.9
    assert "run summary" in completed.stdout and "final test accuracy" in completed.stdout
    assert str(run_dir) in completed.stdout.replace("\n", "")


def _quick_run(runs_dir, name, *overrides):
    """`fedloom run` in-process for one round, without a progress bar."""
    sets = [arg for override in ("rounds=1", *overrides) for arg in ("--set", override)]
    return main(["run", "--no-progress", "--runs-dir", str(runs_dir), "--name", name, *sets])


def test_model_file_is_safetensors_with_named_tensors(tmp_path):
    from safetensors.torch import load_file

    assert _quick_run(tmp_path, "m", "model.name=digits_mlp") == 0
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "1.weight": (64, 64),
        "1.bias": (64,),
        "3.weight": (10, 64),
        "3.bias": (10,),
    }


def test_run_names_do_not_overwrite(tmp_path):
    for _ in range(2):
        assert _quick_run(tmp_path, "same", "output.plots=false") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same", "same-2"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "run"),
        (["run"], "--set KEY=VALUE"),
        (["data"], "describe"),
        (["data", "describe"], "label histogram"),
    ],
)
def test_help_explains_each_command(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    assert expected in capsys.readouterr().out


def test_help_lists_every_choice_the_config_accepts():
    """The help's lists are prose built without torch; this keeps them in step with the config."""
    import re
    import typing

    from fedloom.aggregate import WEIGHTINGS
    from fedloom.cli._config_args import CONFIG_HELP
    from fedloom.config import RunConfig
    from fedloom.names import ENGINES
    from fedloom.registry import REGISTRY

    fields = RunConfig.model_fields
    data_fields = fields["data"].annotation.model_fields  # type: ignore[union-attr]
    assert REGISTRY.names("engine") == ENGINES  # the built-in engines, in the help's order
    choices = CONFIG_HELP.split("Datasets:", 1)[1]
    for name in (
        *typing.get_args(data_fields["dataset"].annotation),
        *REGISTRY.names("partition"),
        *REGISTRY.names("algorithm"),
        *REGISTRY.names("aggregator"),
        *WEIGHTINGS,
        *ENGINES,
    ):
        assert re.search(rf"\b{name}\b", choices), f"{name} is missing from fedloom run --help"


def test_data_describe_prints_sizes_and_histograms(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert (
        main(
            [
                "data",
                "describe",
                "--set",
                "data.num_clients=5",
                "--set",
                "data.partition=shards",
                "--set",
                "data.partition.shards_per_client=2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "digits: 5 clients, shards partition" in out
    assert "label histogram" in out and "total 1294; holdout 144; global test set 359" in out


def test_print_config_shows_resolved_yaml(capsys):
    assert main(["run", "--print-config", "--set", "rounds=3"]) == 0
    out = capsys.readouterr().out
    assert "rounds: 3" in out and "dataset: digits" in out


def test_missing_mnist_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import fedloom.data.mnist as mnist

    monkeypatch.setattr(mnist, "MIRRORS", ("http://127.0.0.1:9/",))  # offline: refused at once
    code = main(["run", "--data-root", str(tmp_path), "--set", "data.dataset=mnist"])
    assert code == 1
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and str(tmp_path / "mnist") in err


def test_resume_extends_a_finished_run_to_the_model_of_a_longer_one(tmp_path):
    from safetensors.torch import load_file

    settings = ("model.name=digits_mlp", "output.plots=false", "engine=sequential")
    sets = [arg for s in settings for arg in ("--set", s)]
    base = ["run", "--no-progress", "--runs-dir", str(tmp_path)]
    assert main([*base, "--name", "long", "--set", "rounds=4", *sets]) == 0
    assert main([*base, "--name", "short", "--set", "rounds=2", *sets]) == 0
    assert main(["run", "--no-progress", "--resume", str(tmp_path / "short"),
                 "--set", "rounds=4"]) == 0  # fmt: skip
    extended = load_file(str(tmp_path / "short" / "model.safetensors"))
    straight = load_file(str(tmp_path / "long" / "model.safetensors"))
    assert all((extended[k] == straight[k]).all() for k in straight)  # bit for bit
    lines = (tmp_path / "short" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3, 4]
    # another experiment's checkpoint is refused, naming the problem
    assert main(["run", "--no-progress", "--resume", str(tmp_path / "short"),
                 "--set", "client.lr=0.5"]) == 1  # fmt: skip
    assert main(["run", "--resume", str(tmp_path / "nowhere")]) == 1


def _impossible_runs_dir(tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {
        "under_a_file": blocker / "runs",
        "a_file": blocker,
        "too_long": tmp_path / ("x" * 300),
    }[where]


@pytest.mark.parametrize("where", ["under_a_file", "a_file", "too_long"])
@pytest.mark.parametrize("flag", ["--runs-dir", "output.runs_dir"])
def test_an_impossible_runs_dir_is_one_line_and_exit_code_2(tmp_path, capsys, where, flag):
    """A runs dir under a regular file (or a name too long for the file system) used to be a
    FileNotFoundError / NotADirectoryError / OSError traceback after the data had loaded; it
    is now checked before anything is built and named as `output.runs_dir`."""
    runs_dir = _impossible_runs_dir(tmp_path, where)
    given = (
        ["--runs-dir", str(runs_dir)] if flag == "--runs-dir" else ["--set", f"{flag}={runs_dir}"]
    )
    assert main(["run", "--no-progress", *given]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedloom: config error: output.runs_dir: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_runs_dir_is_one_line_and_exit_code_2(tmp_path, capsys):
    """A read-only runs dir used to be a PermissionError traceback."""
    tmp_path.joinpath("ro").mkdir(mode=0o555)
    assert main(["run", "--no-progress", "--runs-dir", str(tmp_path / "ro" / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedloom: config error: output.runs_dir: ") and "not writable" in err


def test_a_run_name_too_long_for_the_file_system_is_named(tmp_path, capsys):
    """The runs dir is fine but the run's own folder cannot be made: the error names `name`."""
    code = main(["run", "--no-progress", "--runs-dir", str(tmp_path), "--name", "y" * 300])
    assert code == 2
    assert capsys.readouterr().err.startswith("fedloom: config error: name: cannot create")


def test_the_server_checks_its_runs_dir_too(tmp_path, capsys):
    """`fedloom server` writes its run directory under output.runs_dir as well."""
    runs_dir = _impossible_runs_dir(tmp_path, "under_a_file")
    assert main(["server", "--insecure", "--runs-dir", str(runs_dir)]) == 2
    assert capsys.readouterr().err.startswith("fedloom: config error: output.runs_dir: ")
