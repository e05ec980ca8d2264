"""The adversarial-fairness study: the quick version runs and its figure is written; the
claims the README states hold on the committed full results."""

import json
from pathlib import Path

import numpy as np

from fedloom.studies import STUDIES, adversarial_fairness

RESULTS = Path(__file__).parents[2] / "benchmarks/results/studies/adversarial-fairness/results.json"


def test_quick_study_runs_and_writes_its_figure(tmp_path):
    results = adversarial_fairness.run(tmp_path, quick=True)
    assert list(results["lambdas"]) == ["0", "0.5", "1", "2"]
    for row in results["lambdas"].values():
        assert len(row["per_client"]["demographic_parity_gap"]) == 10
        assert 0.5 < row["accuracy"] <= 1.0 and 0.0 <= row["demographic_parity_gap"] <= 1.0
    assert results["claims"] == adversarial_fairness.claims(results)
    assert results["setting"]["client_group1_share"][0] < 0.2 < 0.8 < results["setting"]["client_group1_share"][-1]  # fmt: skip
    assert json.loads((tmp_path / "results.json").read_text())["lambdas"].keys() == results["lambdas"].keys()  # fmt: skip
    assert (tmp_path / "adversarial-fairness.png").stat().st_size > 10_000
    assert "adversarial-fairness" in STUDIES
    assert "| 2 |" in adversarial_fairness.table(results)


def test_the_committed_full_results_hold_the_readme_claims():
    results = json.loads(RESULTS.read_text())
    assert results["setting"]["rounds"] == 40 and results["setting"]["seeds"] == [0, 1, 2]
    assert results["claims"] == adversarial_fairness.claims(
        results
    )  # stored claims are the numbers'
    rows = results["lambdas"]
    base, strong = rows["0"], rows["2"]
    # the adversary and a fresh probe fall toward chance (0.5): half of lambda 0's edge over
    # chance is gone at lambda 2; the DP gap shrinks by about half (0.277 -> 0.142)
    assert base["adversary_accuracy"] > 0.63 and strong["adversary_accuracy"] < 0.575
    assert strong["probe_accuracy"] < base["probe_accuracy"] - 0.05
    assert strong["demographic_parity_gap"] < 0.55 * base["demographic_parity_gap"]
    # in every seed, not just on average
    for key in ("adversary_accuracy", "demographic_parity_gap"):
        assert all(
            s < b for s, b in zip(strong["per_seed"][key], base["per_seed"][key], strict=True)
        )
    # while task accuracy stays within the stated margin of lambda = 0
    assert all(
        r["accuracy"] >= base["accuracy"] - adversarial_fairness.MARGIN for r in rows.values()
    )
    # per client too: the mean DP gap over clients falls from lambda 0 to 2
    assert np.nanmean(strong["per_client"]["demographic_parity_gap"]) < np.nanmean(
        base["per_client"]["demographic_parity_gap"]
    )
    # an adversary that also sees the label (equalized odds) leaves a smaller EO gap at
    # lambda 2 than the output-only one, and a larger DP gap
    odds = results["sees_label_lambda_2"]
    assert odds["equalized_odds_gap"] < strong["equalized_odds_gap"] - 0.02
    assert odds["demographic_parity_gap"] > strong["demographic_parity_gap"]
    assert all(results["claims"].values())
