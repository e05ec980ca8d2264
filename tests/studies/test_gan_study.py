"""The gan study: the quick version runs and writes its figures; the claim the README states
(the FedAvg GAN covers at least 8 of the 10 digits though each client holds two) holds on
the committed full results; the Frechet distance matches its formula."""

import json
from pathlib import Path

import numpy as np
import pytest

from fedloom.studies import STUDIES, gan

RESULTS = Path(__file__).parents[2] / "benchmarks/results/studies/gan/results.json"


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20_000, 2))
    b = rng.standard_normal((20_000, 2)) * 2.0 + np.array([3.0, 0.0])
    # |mu|^2 + Tr(I + 4I - 2 * 2I) = 9 + 2 (1 + 4 - 4) = 11
    assert gan.frechet(a, b) == pytest.approx(11.0, rel=0.03)
    assert gan.frechet(a, a) == pytest.approx(0.0, abs=1e-4)


def test_quick_study_runs_and_writes_its_figures(tmp_path):
    results = gan.run(tmp_path, quick=True)
    assert list(results["runs"]) == ["central", "fedavg", "fedper"]
    assert results["judge_test_accuracy"] > 0.9
    for row in results["runs"].values():
        assert sum(row["label_share"]) == pytest.approx(1.0, abs=1e-3)
        assert 0 <= row["covered_min"] <= 10 and row["frechet"] > 0
    assert results["runs"]["fedavg"]["covered_min"] >= gan.MIN_COVERED
    assert results["claims"] == gan.claims(results)
    assert json.loads((tmp_path / "results.json").read_text())["runs"].keys() == results["runs"].keys()  # fmt: skip
    for name in ("gan", "samples-central", "samples-fedavg", "samples-fedper"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert "gan" in STUDIES
    assert "| fedavg |" in gan.table(results)


def test_the_committed_full_results_hold_the_readme_claim():
    results = json.loads(RESULTS.read_text())
    assert results["setting"]["rounds"] == 200 and results["setting"]["seeds"] == [0, 1, 2]
    assert results["claims"] == gan.claims(results)  # stored claims are the numbers'
    fedavg = results["runs"]["fedavg"]
    assert all(c >= gan.MIN_COVERED for c in fedavg["covered"])
    assert results["claims"]["fedavg_covers_min_digits"]
    # what the README says beyond the claim (measured, not stated before the run)
    runs = results["runs"]
    assert runs["fedper"]["covered_min"] < gan.MIN_COVERED  # local discriminators lose modes
    assert runs["fedavg"]["frechet"] < runs["fedper"]["frechet"]
    assert runs["central_minimax"]["covered"] == runs["fedavg_minimax"]["covered"] == [10] * 3
