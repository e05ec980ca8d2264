"""The studies' claims, asserted on their own numbers (quick versions where they are slow)."""

import json

import pytest
import torch

from fedloom.cli import main
from fedloom.studies import STUDIES, inconsistency, load_study, stragglers, tyranny


def test_objective_inconsistency_fedavg_misses_and_fednova_finds_the_optimum(tmp_path):
    results = inconsistency.run(tmp_path)
    lr = results["setting"]["lr"]
    # FedAvg's fixed point with GD on 1/2||w - b_k||^2: client k moves a share
    # c_k = 1 - (1 - lr)^tau_k of the way to b_k, so w* = sum c_k b_k / sum c_k.
    c = torch.tensor([1 - (1 - lr) ** t for t in inconsistency.CLIENT_STEPS], dtype=torch.float64)
    fixed_point = (c[:, None] * inconsistency.CENTERS.double()).sum(0) / c.sum()
    assert torch.allclose(torch.tensor(results["fedavg"]["final"]).double(), fixed_point, atol=1e-3)
    assert results["fedavg"]["distance_to_optimum"] > 1.5
    assert results["fednova"]["distance_to_optimum"] < 0.05
    assert (tmp_path / "inconsistency.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text())["study"] == "inconsistency"


def test_fedavg_with_one_step_is_data_parallel_sgd():
    results = load_study("e1-equivalence").run(quick=True)
    assert results["fedavg_vs_sgd"]["relative_difference"] < 1e-5
    assert results["fedavgm_vs_momentum_sgd"]["relative_difference"] < 1e-5


def test_stragglers_fedprox_keeps_training_where_fedavg_drops_devices():
    results = stragglers.run(rounds=5, engine="sequential")
    summary = results["summary"]
    avg_90 = summary["FedAvg, 90% stragglers (dropped)"]
    prox_90 = summary["FedProx mu=1, 90% stragglers (kept)"]
    prox_0 = summary["FedProx mu=1, 0% stragglers"]
    # dropping 90% of the cohort leaves one device per round: loss far higher and erratic
    assert avg_90["final"] > prox_90["final"] + 0.5
    assert avg_90["max_rise"] > 0.1
    # FedProx's proximal term keeps its loss going down every round, stragglers or not
    assert prox_90["max_rise"] < 0.005 and prox_0["max_rise"] < 0.005
    # with mu = 1, stragglers cost FedProx little
    assert abs(prox_90["final"] - prox_0["final"]) < 0.1


def test_tyranny_of_the_majority_and_what_uniform_weighting_and_qffl_do(tmp_path):
    results = tyranny.run(tmp_path, quick=True)
    summary = results["summary"]
    examples = summary["FedAvg (example weights)"]
    large, small = examples["client_accuracy"][:2], examples["client_accuracy"][2:]
    assert min(large) > 0.9 and max(small) <= 0.1  # large clients win, small ones stall
    uniform = summary["FedAvg (uniform weights)"]
    assert uniform["worst"] > examples["worst"] + 0.3
    assert uniform["std"] < examples["std"]
    assert summary["q-FFL (q = 5)"]["std"] < examples["std"]
    assert (tmp_path / "tyranny.png").exists()


@pytest.mark.mnist
def test_mnist_drift_study_runs_and_records_accuracy(mnist, tmp_path):
    results = load_study("mnist-drift").run(
        tmp_path, quick=True, variants=["FedAvg E=1 B=10", "FedSGD (E=1, B=full)"]
    )
    fedavg, fedsgd = results["variants"].values()
    assert fedavg["rounds_run"] == 5 and fedsgd["rounds_run"] == 20
    for variant in (fedavg, fedsgd):
        assert variant["rounds_to_target"] is None
        assert 0.2 < variant["best_test_accuracy"] < 0.97
    assert json.loads((tmp_path / "results.json").read_text())["variants"].keys() == {
        "FedAvg E=1 B=10",
        "FedSGD (E=1, B=full)",
    }


def test_study_command_lists_and_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    usage = capsys.readouterr().out
    assert all(name in usage for name in STUDIES)
    assert main(["study", "e1-equivalence", "--quick", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["fedavg_vs_sgd"]["max_abs_difference"] < 1e-5


def test_robustness_grid_shape_on_a_small_slice(tmp_path):
    from fedloom.studies import robustness

    results = robustness.run(
        tmp_path,
        quick=True,
        aggregators=("mean", "median"),
        attacks=("none", "scaling x100"),
        fractions=(0.1,),
    )
    grid = results["test_accuracy"]
    assert set(grid["mean"]) == {"none", "scaling x100 @10%"}
    assert grid["mean"]["none"] > 0.7
    assert grid["mean"]["scaling x100 @10%"] < 0.4  # the mean collapses
    assert grid["median"]["scaling x100 @10%"] > grid["median"]["none"] - 0.05
    assert (tmp_path / "robustness.png").stat().st_size > 10_000
    assert robustness.table(results).row_count == 2


def test_robust_rules_are_configured_for_the_expected_attackers():
    from fedloom.aggregate import Krum, TrimmedMean
    from fedloom.studies.robustness import rule_for

    assert rule_for("krum", 0.4, 20) == Krum(f=8)
    assert rule_for("krum", 0.4, 10) == Krum(f=3)  # capped: 10 > 2 * 3 + 2
    assert rule_for("trimmed_mean", 0.2, 20) == TrimmedMean(beta=0.2)
