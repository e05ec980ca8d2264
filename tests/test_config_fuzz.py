"""Property: an invalid config never reaches training and never ends in a traceback.

A seeded generator (``random.Random``, no new dependency) makes a few hundred invalid configs
of every kind: unknown keys, wrong types, out-of-range numbers, unknown names of registered
things, models that do not fit the data, impossible runs dirs, missing data roots, bad
``--set`` syntax and unreadable config files, each among random valid overrides and given by
``--set``, a YAML file or a flag. Each goes through the real entry point in process
(:func:`fedloom.cli.main`) and must exit 2 with nothing but ``fedloom: config error:`` lines,
one of which starts with the offending field, and no traceback.

Training is replaced by a tripwire, so a config that the checks let through fails the test
(naming the case) instead of training, which also keeps the test fast; valid configs, drawn
the same way, must reach the tripwire, so the checks do not reject good runs. No download is
tried (the ``offline`` fixture). A few subprocess runs confirm the exit code end to end.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import fedloom.experiment
from fedloom.cli import main
from fedloom.config import RunConfig, apply_overrides
from fedloom.registry import REGISTRY

SEED, CASES_PER_KIND, VALID_CASES = 20170217, 30, 20
PREFIX = "fedloom: config error: "
DEFAULTS = RunConfig().model_dump(mode="json")


def _sections(node: dict, path: str = ""):
    """Every section of a config dict: its dotted path ("" the top) and its keys."""
    yield path, set(node)
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _sections(value, f"{path}.{key}".lstrip("."))


SECTIONS = dict(_sections(DEFAULTS))  # the keys allowed at each section of the default config
KNOWN_NAMES = {n for kind in ("algorithm", "aggregator", "partition", "model", "engine")
               for n in REGISTRY.names(kind)} | {"auto"}  # fmt: skip
INTS = {  # field -> smallest valid value
    "seed": 0, "rounds": 1, "workers": 1, "data.num_clients": 1, "client.epochs": 1,
    "client.steps": 1, "client.batch_size": 1, "eval.every": 1, "data.synthetic.num_devices": 1,
    "server.validation.min_updates": 1, "deploy.retries": 0, "deploy.min_fit_clients": 1,
}  # fmt: skip
FLOATS = {  # field -> (low, low is allowed, high or None, high is allowed)
    "client.lr": (0, False, None, False), "client.momentum": (0, True, 1, False),
    "client.weight_decay": (0, True, None, False), "server.fraction": (0, False, 1, True),
    "server.lr": (0, False, None, False), "server.clip_norm": (0, False, None, False),
    "data.holdout_fraction": (0, True, 1, False), "data.partition.alpha": (0, False, None, False),
    "data.synthetic.alpha": (0, True, None, False), "attack.fraction": (0, True, 1, True),
    "attack.sigma": (0, True, None, False), "client.stragglers.fraction": (0, True, 1, True),
    "deploy.round_timeout_s": (0, False, None, False),
    "server.validation.max_norm": (0, False, None, False),
}  # fmt: skip
BOOLS = ["eval.clients", "eval.train", "output.plots", "output.save_model", "output.checkpoint",
         "data.synthetic.iid", "deploy.insecure", "deploy.compress", "attack.omniscient"]  # fmt: skip
STRS = ["name", "data.root", "output.runs_dir", "model.init", "deploy.address", "deploy.certs"]
WRONG = {
    int: ["abc", "[1, 2]", "{a: 1}", "2.5", "''", "1/2"],
    float: ["abc", "[0.5]", "{a: 1}", "1/2", "'one'", "0.5.1"],
    bool: ["maybe", "2", "-1", "0.5", "[true]", "{a: 1}"],
    str: ["[a, b]", "{a: 1}", "5", "1.5", "true", "[]"],
}
NAMED = ["algorithm", "server.aggregator", "data.partition", "model.name", "engine",
         "data.dataset", "model.buffers", "client.stragglers.policy", "server.weighting",
         "attack.kind", "deploy.client_state", "server.on_client_error"]  # fmt: skip
MISFITS = {"digits": (["mnist_2nn", "mnist_cnn"], "(1, 8, 8)"),
           "synthetic": (["mnist_2nn", "mnist_cnn", "digits_mlp", "digits_cnn", "digits_cnn_bn", "digits_cnn_in"], "(60,)")}  # fmt: skip
FITS = {"digits": ["auto", "digits_cnn", "digits_mlp", "logistic_regression"],
        "synthetic": ["auto", "logistic_regression"]}  # fmt: skip
BAD_YAML = ["[1", "{a: 1", "'open", '"open', "a: b: c", "@x", "`x", "!!int abc", "!!bool maybe"]
NOISE: dict[str, Callable[[random.Random], str]] = {
    "seed": lambda r: str(r.randint(0, 10**6)),
    "rounds": lambda r: str(r.randint(1, 50)),
    "client.epochs": lambda r: str(r.randint(1, 5)),
    "client.lr": lambda r: f"{r.uniform(0.001, 1):.4f}",
    "client.batch_size": lambda r: r.choice(["full", str(r.randint(1, 64))]),
    "server.fraction": lambda r: f"{r.uniform(0.05, 1):.3f}",
    "eval.every": lambda r: str(r.randint(1, 5)),
    "output.plots": lambda r: r.choice(["true", "false"]),
}


@dataclass
class Places:
    tmp: Path
    runs: Path  # a good runs dir
    file: Path  # a regular file
    empty: Path  # an empty folder
    read_only: Path | None  # a folder this process cannot write (None when running as root)


@dataclass
class Case:
    kind: str
    sets: list[str] = field(default_factory=list)  # --set overrides (after the noise)
    names: list[str] = field(default_factory=list)  # each starts an error line
    argv: list[str] = field(default_factory=list)  # more flags
    contains: list[str] = field(default_factory=list)  # each appears in stderr
    env: dict[str, str] = field(default_factory=dict)
    own_runs_dir: bool = False  # the case gives the runs dir (else a good one is added)
    as_file: bool = True  # the overrides may travel in a YAML file instead


def _word(rng: random.Random) -> str:
    tail = rng.choices(string.ascii_lowercase + string.digits + "_-", k=rng.randint(0, 10))
    return rng.choice(string.ascii_lowercase) + "".join(tail)


def _mutate(rng: random.Random, name: str) -> str:
    """A typo: a letter added, dropped or doubled, a case or separator changed."""
    i = rng.randrange(len(name))
    return rng.choice([
        name + rng.choice(string.ascii_lowercase), name[:i] + name[i + 1:] or name + "x",
        name[:i] + name[i] * 2 + name[i:], name.capitalize(), name.replace("_", "-") + "-",
    ])  # fmt: skip


def unknown_key(rng: random.Random, places: Places) -> Case:
    path = rng.choice(sorted(SECTIONS))
    allowed = SECTIONS[path]
    key = _word(rng)
    if rng.random() < 0.5:  # a typo of a real key, from anywhere
        key = _mutate(rng, rng.choice(sorted({k for keys in SECTIONS.values() for k in keys})))
    if key in allowed:
        key += "_x"
    where = f"{path}.{key}" if path else key
    return Case("unknown key", [f"{where}={rng.choice(['1', 'x', '0.5', 'true'])}"],
                [f"{where}: unknown key"])  # fmt: skip


def wrong_type(rng: random.Random, places: Places) -> Case:
    kind = rng.choice([int, float, bool, str])
    options = {int: sorted(INTS), float: sorted(FLOATS), bool: BOOLS, str: STRS}[kind]
    name = rng.choice(options)
    value = rng.choice(WRONG[kind])  # (a runs dir of the wrong type is the case's own)
    return Case("wrong type", [f"{name}={value}"], [f"{name}: "], own_runs_dir="runs" in name)


def _number(x: float) -> str:
    return f"{x:.6g}"


def out_of_range(rng: random.Random, places: Places) -> Case:
    if rng.random() < 0.4:
        name = rng.choice(sorted(INTS))
        value = str(INTS[name] - rng.choice([1, rng.randint(1, 10**9)]))
    else:
        name = rng.choice(sorted(FLOATS))
        low, low_ok, high, high_ok = FLOATS[name]
        bad = [".nan", _number(low - rng.uniform(1e-6, 1e3)), "-.inf", *[str(low)][low_ok:]]
        if high is not None:
            bad += [_number(high + rng.uniform(1e-3, 1e3)), ".inf", *[str(high)][high_ok:]]
        value = rng.choice(bad)
    return Case("out of range", [f"{name}={value}"], [f"{name}: "])


def unknown_name(rng: random.Random, places: Places) -> Case:
    name = rng.choice(NAMED)
    value = "fedx" + _word(rng)
    if rng.random() < 0.5:
        value = _mutate(rng, rng.choice(sorted(KNOWN_NAMES)))
    while value in KNOWN_NAMES or value in ("digits", "mnist", "synthetic", "average", "local"):
        value += "z"
    if name == "engine" and rng.random() < 0.5:
        return Case("unknown name", names=["engine: "], argv=["--engine", value], as_file=False)
    return Case("unknown name", [f"{name}={value}"], [f"{name}: "])


def misfit(rng: random.Random, places: Places) -> Case:
    dataset = rng.choice(sorted(MISFITS))
    models, shape = MISFITS[dataset]
    model = rng.choice(models)
    return Case("model misfit", [f"data.dataset={dataset}", f"model.name={model}"],
                [f"model.name: {model} does not fit"], contains=[f"input shape {shape}"])  # fmt: skip


def runs_dir(rng: random.Random, places: Places) -> Case:
    targets = [places.file, places.file / "runs", places.file / "a" / "b",
               places.tmp / ("x" * rng.randint(256, 400))]  # fmt: skip
    if places.read_only is not None:
        targets.append(places.read_only / "runs")
    target = rng.choice(targets)
    if rng.random() < 0.5:
        return Case("runs dir", names=["output.runs_dir: "], argv=["--runs-dir", str(target)],
                    own_runs_dir=True, as_file=False)  # fmt: skip
    return Case("runs dir", [f"output.runs_dir={target}"], ["output.runs_dir: "], own_runs_dir=True)


def data_root(rng: random.Random, places: Places) -> Case:
    root = rng.choice([places.empty, places.tmp / f"missing-{rng.randrange(10**6)}", places.file,
                       places.tmp / ("y" * rng.randint(256, 300))])  # fmt: skip
    files = [] if len(root.name) > 255 else ["train-images-idx3-ubyte.gz"]
    case = Case("data root", ["data.dataset=mnist"], ["data.root: "], contains=files)
    how = rng.choice(["flag", "set", "env", "default"])
    if how == "flag":
        case.argv = ["--data-root", str(root)]
    elif how == "set":
        case.sets.append(f"data.root={root}")
    elif how == "env":
        case.env = {"FEDLOOM_DATA": str(root)}
        case.contains.append(f"FEDLOOM_DATA={root}")
    else:  # neither: the cache default, under XDG_CACHE_HOME
        case.env = {"XDG_CACHE_HOME": str(root)}
        case.contains.append("nor FEDLOOM_DATA")
    return case


def set_syntax(rng: random.Random, places: Places) -> Case:
    key = rng.choice(["rounds", "client.lr", "data.partition.alpha", "server.aggregator"])
    key = key if rng.random() < 0.8 else _word(rng)
    parts = key.split(".")
    i = rng.randint(0, len(parts))
    override = rng.choice([
        key, f"{key} 5", f"{key}:5", f"={rng.randint(0, 9)}", f" ={key}",
        ".".join([*parts[:i], rng.choice(["", " "]), *parts[i:]]) + "=1",
        f"{key}={rng.choice(BAD_YAML)}",
    ])  # fmt: skip
    return Case("--set syntax", [override], [f"--set {override!r}: "], as_file=False)


def config_file(rng: random.Random, places: Places) -> Case:
    path = places.tmp / f"config-{rng.randrange(10**9)}.yaml"
    how = rng.choice(["missing", "folder", "binary", "under a file", "yaml", "not a mapping"])
    name = f"config file {path}: cannot read it"
    if how == "missing":
        name = f"config file {path} does not exist"
    elif how == "folder":
        path.mkdir()
    elif how == "binary":
        path.write_bytes(b"\xff" + bytes(rng.randrange(128, 256) for _ in range(20)))
    elif how == "under a file":
        path = places.file / "config.yaml"
        name = f"config file {path}: cannot read it"
    else:
        bad = rng.choice(BAD_YAML) if how == "yaml" else rng.choice(["- a\n- b\n", "5\n", "text\n"])
        path.write_text(f"rounds: {bad}\n" if how == "yaml" else bad)
        name = f"{path}: "
    return Case("config file", names=[name], argv=["--config", str(path)], as_file=False)


def several(rng: random.Random, places: Places) -> Case:
    """Two or three schema faults at once: every one of them is named."""
    case, wanted = Case("several"), rng.randint(2, 3)
    while len(case.names) < wanted:
        fault = rng.choice([unknown_key, wrong_type, out_of_range])(rng, places)
        where = fault.names[0].split(":")[0]
        taken = [n.split(":")[0] for n in case.names]
        if any(w == where or w.startswith(where + ".") or where.startswith(w + ".") for w in taken):
            continue
        case.sets += fault.sets
        case.names += fault.names
        case.own_runs_dir |= fault.own_runs_dir  # else --runs-dir would override the fault
    return case


KINDS = [unknown_key, wrong_type, out_of_range, unknown_name, misfit, runs_dir, data_root,
         set_syntax, config_file, several]  # fmt: skip


def _invalid_cases(places: Places) -> list[tuple[Case, list[str]]]:
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES_PER_KIND * len(KINDS)):
        case = KINDS[i % len(KINDS)](rng, places)
        noise = [f"{k}={NOISE[k](rng)}" for k in rng.sample(sorted(NOISE), rng.randint(0, 3))]
        cases.append((case, _argv(rng, places, case, noise + case.sets, i)))
    return cases


def _argv(rng: random.Random, places: Places, case: Case, sets: list[str], i: int) -> list[str]:
    """``run`` with the overrides as --set, or (sometimes) in a YAML file given by --config."""
    argv = ["run", "--no-progress", *case.argv]
    if case.as_file and sets and rng.random() < 0.3:
        path = places.tmp / f"case-{i}.yaml"
        path.write_text(yaml.safe_dump(apply_overrides({}, sets)))
        argv += ["--config", str(path)]
    else:
        argv += [arg for s in sets for arg in ("--set", s)]
    if not case.own_runs_dir:
        argv += ["--runs-dir", str(places.runs)]
    return argv


class ReachedTraining(Exception):
    """Raised instead of training: the config passed every check."""


@pytest.fixture
def places(tmp_path, monkeypatch, offline):
    def tripwire(*args, **kwargs):
        raise ReachedTraining

    monkeypatch.setattr(fedloom.experiment, "simulate_config", tripwire)
    monkeypatch.chdir(tmp_path)  # nothing lands in the checkout, even by mistake
    file, empty, read_only = tmp_path / "a-file", tmp_path / "empty", tmp_path / "read-only"
    file.write_text("a regular file\n")
    empty.mkdir()
    read_only.mkdir(mode=0o555)
    root = os.geteuid() == 0  # root writes into read-only folders: no such case then
    return Places(tmp_path, tmp_path / "runs", file, empty, None if root else read_only)


def _run(argv: list[str], case: Case, places: Places, capsys, monkeypatch) -> tuple:
    with monkeypatch.context() as patch:
        patch.delenv("FEDLOOM_DATA", raising=False)
        patch.setenv("XDG_CACHE_HOME", str(places.tmp / "cache"))
        for key, value in case.env.items():
            patch.setenv(key, value)
        try:
            code: object = main(argv)
        except BaseException as exc:  # noqa: BLE001  (the tripwire, argparse's exit, a bug)
            code = exc
    out, err = capsys.readouterr()
    return code, out, err


def _problems(case: Case, code: object, out: str, err: str) -> list[str]:
    lines = err.splitlines()
    problems = []
    if code != 2:
        problems.append(f"exit {code!r}")
    if "Traceback" in out + err:
        problems.append("a traceback")
    if not lines or any(not line.startswith(PREFIX) for line in lines):
        problems.append("stderr is not config-error lines")
    problems += [f"{name!r} not named" for name in case.names
                 if not any(line.startswith(PREFIX + name) for line in lines)]  # fmt: skip
    problems += [f"{text!r} not said" for text in case.contains if text not in err]
    if out:
        problems.append("stdout not empty")
    return problems


def test_invalid_configs_exit_2_naming_the_field_without_a_traceback(places, capsys, monkeypatch):
    """Several hundred random invalid configs, each one line per problem, before training."""
    cases = _invalid_cases(places)
    assert len(cases) >= 300 and {case.kind for case, _ in cases} == {
        "unknown key", "wrong type", "out of range", "unknown name", "model misfit", "runs dir",
        "data root", "--set syntax", "config file", "several",
    }  # fmt: skip
    failures = []
    for case, argv in cases:
        code, out, err = _run(argv, case, places, capsys, monkeypatch)
        problems = _problems(case, code, out, err)
        if problems:
            failures.append(f"{case.kind}: {argv} -> {'; '.join(problems)}\n    {err or out}")
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures[:15])


def test_valid_configs_drawn_the_same_way_pass_every_check(places, capsys, monkeypatch):
    """The new checks must not reject good runs: valid noise, a model that fits its data, a
    runs dir that does not exist yet; each must get as far as training (the tripwire)."""
    rng = random.Random(SEED + 1)
    for i in range(VALID_CASES):
        dataset = rng.choice(sorted(FITS))
        sets = [f"data.dataset={dataset}", f"model.name={rng.choice(FITS[dataset])}"]
        sets += [f"{k}={NOISE[k](rng)}" for k in rng.sample(sorted(NOISE), rng.randint(0, 4))]
        case = Case("valid", sets, own_runs_dir=True)
        fresh = places.tmp / f"new-{i}" / "runs"  # a runs dir that does not exist yet
        argv = [*_argv(rng, places, case, sets, i), "--runs-dir", str(fresh)]
        code, out, err = _run(argv, case, places, capsys, monkeypatch)
        assert isinstance(code, ReachedTraining), (argv, code, err)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--set", "model.name=mnist_cnn"], "model.name: mnist_cnn does not fit"),
        (["--runs-dir", "{file}/runs"], "output.runs_dir: "),
        (["--set", "client..lr=0.1"], "--set 'client..lr=0.1': "),
    ],
)
def test_the_installed_command_exits_2_without_a_traceback(tmp_path, args, field):
    """End to end: `python -m fedloom.cli run ...` in its own process."""
    (tmp_path / "a-file").write_text("a regular file\n")
    args = [a.format(file=tmp_path / "a-file") for a in args]
    completed = subprocess.run(
        [sys.executable, "-m", "fedloom.cli", "run", "--no-progress", "--runs-dir",
         str(tmp_path / "runs"), *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    assert completed.stderr.splitlines() == [completed.stderr.strip()]
    assert completed.stderr.startswith(PREFIX + field)
    assert not (tmp_path / "runs").exists() or field.startswith("output")
