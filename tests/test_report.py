"""`fedloom report` and `fedloom compare` on two real runs: the numbers on the page are the
runs' own, the config differences are exactly the keys changed, nothing from a run is
rendered unescaped."""

import base64
import json
import re

import pytest

from fedloom.cli import main
from fedloom.config import RunConfig
from fedloom.experiment import run_experiment
from fedloom.report.compare import config_differences, final_metrics, load_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for name, lr in (("slow", 0.02), ("fast", 0.1)):
        config = RunConfig.from_dict(
            {
                "name": name,
                "seed": 1,
                "rounds": 3,
                "data": {"dataset": "digits", "num_clients": 6, "partition": "iid"},
                "model": {"name": "digits_mlp"},
                "client": {"steps": 3, "batch_size": 20, "lr": lr},
                "server": {"fraction": 0.5},
                "output": {"runs_dir": str(root), "plots": False},
            }
        )
        dirs.append(run_experiment(config, show_progress=False).run_dir)
    return dirs


def test_the_page_holds_the_runs_numbers_figures_and_config_differences(two_runs, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", *map(str, two_runs), "-o", str(out), "--title", "lr <sweep>"]) == 0
    page = out.read_text()
    assert "<title>lr &lt;sweep&gt;</title>" in page and "<sweep>" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # vs rounds, vs bytes, vs wall time, per-client spread
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    for run_dir in two_runs:
        records = [
            json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        ]
        assert f"{records[-1]['test_accuracy']:.4f}" in page
        megabytes = sum(r["bytes_down"] + r["bytes_up"] for r in records) / 1e6
        assert f"{megabytes:,.1f}" in page
    # the one decisive difference (lr) and nothing else; output.* and name are not decisive
    runs = load_runs(two_runs)
    assert config_differences(runs) == [("client.lr", [0.02, 0.1])]
    assert "<td>client.lr</td><td>0.02</td><td>0.1</td>" in page


def test_compare_prints_one_row_per_run(two_runs, capsys):
    assert main(["compare", *map(str, two_runs)]) == 0
    printed = capsys.readouterr().out
    runs = load_runs(two_runs)
    for run in runs:
        row = final_metrics(run, "accuracy")
        assert row[0] == 3.0
        assert run.name in printed and f"{row[1]:.4f}" in printed
    assert "client.lr" in printed


def test_a_folder_that_is_not_a_run_is_named(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 1
    assert f"{tmp_path} is not a run directory (no metrics.jsonl)" in capsys.readouterr().err


def test_run_strings_are_escaped(two_runs, tmp_path):
    hostile = tmp_path / "<svg onload=alert(1)>"
    hostile.mkdir()
    for name in ("metrics.jsonl", "config.yaml"):
        (hostile / name).write_text((two_runs[0] / name).read_text())
    config = (hostile / "config.yaml").read_text().replace("seed: 1", "seed: <script>x()</script>")
    (hostile / "config.yaml").write_text(config)
    out = tmp_path / "r.html"
    assert main(["report", str(two_runs[1]), str(hostile), "-o", str(out)]) == 0
    page = out.read_text()
    assert "<script>" not in page and "<svg" not in page
    assert "&lt;svg onload=alert(1)&gt;" in page and "&lt;script&gt;x()" in page
