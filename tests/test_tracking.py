"""TensorBoard and MLflow tracking, read back from what they wrote: the same numbers as
metrics.jsonl, per-client histograms, the config as parameters, the final model as an
artifact, one MLflow run across a resume, and nothing imported when tracking is off."""

import json
import subprocess
import sys

import pytest
import torch

from fedloom.config import RunConfig, build_federated, build_model
from fedloom.engine import plans_for_round
from fedloom.experiment import run_experiment
from fedloom.model_file import load_model


def config_for(tmp_path, rounds, **output):
    return RunConfig.from_dict(
        {
            "name": "tracked",
            "seed": 4,
            "rounds": rounds,
            "data": {"dataset": "digits", "num_clients": 6, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"steps": 2, "batch_size": 20, "lr": 0.1},
            "server": {"fraction": 0.5},
            "output": {"runs_dir": str(tmp_path / "runs"), "plots": False, **output},
        }
    )


def jsonl(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_holds_every_metric_and_per_client_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    outcome = run_experiment(config_for(tmp_path, 3, tensorboard="tb"), show_progress=False)
    events = EventAccumulator(str(outcome.run_dir / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    records = jsonl(outcome.run_dir)
    for name in ("test_accuracy", "test_loss", "train_loss", "client_accuracy_worst10"):
        scalars = events.Scalars(name)
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in records], rel=1e-6)
    histograms = events.Histograms("clients/update_norm")
    assert [h.step for h in histograms] == [1, 2, 3]
    assert all(h.histogram_value.num == 3 for h in histograms)  # 3 clients per round
    # round 1's cohort: its clients' training-set sizes, summed
    config = config_for(tmp_path, 3)
    cohort = [p.client_id for p in plans_for_round(6, 0.5, seed=4, round=0)]
    expected = sum(int(build_federated(config).client_sizes[k]) for k in cohort)
    sizes = events.Histograms("clients/num_examples")[0].histogram_value
    assert sizes.sum == expected and sizes.num == 3


def test_mlflow_gets_params_metrics_and_the_model_and_one_run_across_a_resume(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run_experiment(config_for(tmp_path, 2, mlflow=uri), show_progress=False)
    run_id = json.loads((first.run_dir / "mlflow.json").read_text())["run_id"]
    resumed = run_experiment(
        config_for(tmp_path, 3, mlflow=uri), show_progress=False, resume=first.run_dir
    )
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fedloom").experiment_id])
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert run.data.params["client.lr"] == "0.1" and run.data.params["data.num_clients"] == "6"
    history = client.get_metric_history(run_id, "test_accuracy")
    records = jsonl(resumed.run_dir)
    logged = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in logged] == [1, 2, 3]  # rounds 1-2, then 3 after the resume
    assert [value for _, value in logged] == pytest.approx([r["test_accuracy"] for r in records])
    folder = client.download_artifacts(run_id, "model.safetensors", str(tmp_path / "dl"))
    config = config_for(tmp_path, 3)
    module = build_model(config, build_federated(config).dataset)()
    params, _ = load_model(folder, module)
    assert torch.equal(params, resumed.history.final_state.params)


def test_tracking_off_imports_neither_library(tmp_path):
    code = (
        "import sys; from fedloom.config import RunConfig; "
        "from fedloom.experiment import run_experiment; "
        f"run_experiment(RunConfig.from_dict({{'rounds': 1, 'data': {{'num_clients': 4}}, "
        f"'output': {{'runs_dir': {str(tmp_path)!r}, 'plots': False}}}}), show_progress=False); "
        "print(sorted(m for m in ('mlflow', 'tensorboard') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
