"""The personalization study: the quick version runs and its own per-client numbers agree with
the metrics the runs reported; the claims the README states hold on the committed full
results."""

import json
from pathlib import Path

import numpy as np
import pytest

from fedloom.engine.evaluation import spread_metrics
from fedloom.studies import STUDIES, personalization

RESULTS = Path(__file__).parents[2] / "benchmarks/results/studies/personalization/results.json"


def _worst10(scores):
    ordered = np.sort(scores)
    return ordered[: max(int(np.ceil(0.1 * len(ordered))), 1)].mean()


@pytest.mark.mnist
def test_quick_personalization_study_runs_and_writes_its_figure(mnist, tmp_path):
    results = personalization.run(tmp_path, quick=True)
    methods = results["methods"]
    assert list(methods) == list(personalization.METHODS)
    assert results["claims"] == personalization.claims(results)
    for name, v in methods.items():
        (personal,) = v["personal"]["per_client_per_seed"]
        (global_,) = v["global"]["per_client_per_seed"]
        assert len(personal) == 20 and all(0.0 <= a <= 1.0 for a in personal)
        assert v["personal"]["mean"] == pytest.approx(np.mean(personal), abs=1e-4)
        assert v["personal"]["worst10"] == pytest.approx(_worst10(personal), abs=1e-4)
        # the study's own per-client scores are those the run's evaluation reported
        (reported,) = v["reported_per_seed"]
        assert v["global"]["mean"] == pytest.approx(reported["client_accuracy_mean"], abs=1e-4)
        prefix = {"FedAvg": None, "FedAvg + fine-tuning": "client_finetuned"}.get(
            name, "client_personal"
        )
        if prefix is not None:
            assert v["personal"]["mean"] == pytest.approx(
                reported[f"{prefix}_accuracy_mean"], abs=1e-4
            )
            assert v["personal"]["worst10"] == pytest.approx(
                reported[f"{prefix}_accuracy_worst10"], abs=1e-4
            )
        else:
            assert personal == global_
    # Ditto's and fine-tuning's global model is FedAvg's, bit for bit
    fedavg = methods["FedAvg"]["global"]["per_client_per_seed"]
    assert methods["Ditto"]["global"]["per_client_per_seed"] == fedavg
    assert methods["FedAvg + fine-tuning"]["global"]["per_client_per_seed"] == fedavg
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["methods"].keys() == methods.keys()
    assert (tmp_path / "personalization.png").stat().st_size > 10_000
    assert "personalization" in STUDIES
    assert "| FedRep |" in personalization.table(results)


def test_spread_matches_the_metric_definition():
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.8, 0.6, 0.4, 1.0, 0.05])
    found = spread_metrics(scores, "acc")
    assert found["acc_worst10"] == pytest.approx((0.05 + 0.1) / 2)  # ceil(1.1) = 2 clients
    assert personalization._spread(list(scores)) == {
        "mean": pytest.approx(scores.mean()),
        "worst10": pytest.approx(0.075),
    }


def test_the_committed_full_results_hold_the_readme_claims():
    results = json.loads(RESULTS.read_text())
    setting = results["setting"]
    assert setting["partition"] == "dirichlet(alpha=0.1)" and len(setting["seeds"]) == 3
    assert setting["clients"] == 30
    assert results["claims"] == personalization.claims(results)  # stored claims are the numbers'
    m = results["methods"]
    base = m["FedAvg"]["global"]
    # every personalized method beats FedAvg's global model on mean per-client accuracy, by
    # more than 0.1, in every seed; and the worst 10% of clients gain even more
    for name in personalization.PERSONALIZED:
        ours = m[name]["personal"]
        assert ours["mean"] > base["mean"] + 0.1, name
        assert ours["worst10"] > base["worst10"] + 0.15, name
        for mine, theirs in zip(ours["mean_per_seed"], base["mean_per_seed"], strict=True):
            assert mine > theirs, name
        for mine, theirs in zip(ours["worst10_per_seed"], base["worst10_per_seed"], strict=True):
            assert mine > theirs, name
    # the personalized methods end close together: fine-tuning is as strong a baseline
    means = [m[name]["personal"]["mean"] for name in personalization.PERSONALIZED]
    assert max(means) - min(means) < 0.01
    # FedPer's and FedRep's global models keep the initial head: worse than FedAvg's, FedRep's
    # worst; Ditto's global model is FedAvg's, bit for bit
    assert m["FedRep"]["global"]["mean"] < m["FedPer"]["global"]["mean"] < base["mean"]
    fedavg = base["per_client_per_seed"]
    assert m["Ditto"]["global"]["per_client_per_seed"] == fedavg
    assert all(n == [30, 30, 30] for n in
               [m[name]["num_personalized_per_seed"] for name in personalization.PERSONALIZED])  # fmt: skip
    assert all(results["claims"].values())
