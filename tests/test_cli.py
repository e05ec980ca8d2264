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
        *REGISTRY.names("task"),
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


@pytest.mark.parametrize(
    "root", ["empty", "missing", "a-file", pytest.param("x" * 300, id="too-long")]
)
def test_missing_mnist_is_a_config_error_naming_data_root(tmp_path, capsys, offline, root):
    """Missing MNIST used to exit 1 with a DataError that did not name the config field; it
    is a config error (exit 2) naming `data.root`, the folder and the files expected there,
    also when the root is a regular file or too long a name (those were tracebacks)."""
    data_root = tmp_path / root
    if root == "empty":
        data_root.mkdir()
    elif root == "a-file":
        data_root.write_text("not a folder")
    code = main(["run", "--data-root", str(data_root), "--set", "data.dataset=mnist",
                 "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fedloom: config error: data.root: ")
    if len(root) < 255:
        assert "train-images-idx3-ubyte.gz" in err[0] and str(data_root / "mnist") in err[0]


def test_missing_mnist_names_the_env_var_that_chose_the_folder(tmp_path, capsys, offline,
                                                               monkeypatch):  # fmt: skip
    """With data.root unset, the folder came from FEDLOOM_DATA (or the cache default): the
    message says so, since that is what the user has to change."""
    monkeypatch.setenv("FEDLOOM_DATA", str(tmp_path / "data"))
    assert main(["run", "--set", "data.dataset=mnist", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedloom: config error: data.root: not set, so FEDLOOM_DATA={tmp_path}")
    monkeypatch.delenv("FEDLOOM_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["run", "--set", "data.dataset=mnist", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "data.root: not set (nor FEDLOOM_DATA), so the default " in err
    assert str(tmp_path / "cache" / "fedloom" / "mnist") in err


def test_corrupt_mnist_files_stay_a_data_error(tmp_path, capsys, offline):
    """Files that are there but broken are not a config problem: exit 1, naming the file."""
    from fedloom.data.mnist import MNIST_FILES

    (tmp_path / "mnist").mkdir()
    for stem in MNIST_FILES.values():
        (tmp_path / "mnist" / stem).write_bytes(b"garbage")
    code = main(["run", "--data-root", str(tmp_path), "--set", "data.dataset=mnist",
                 "--runs-dir", str(tmp_path / "runs")])  # fmt: skip
    assert code == 1
    assert "is not an IDX file" in capsys.readouterr().err


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
