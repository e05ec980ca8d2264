"""The compression study: the quick version runs on MNIST and writes its figure; the claims
the README states hold on the committed full results."""

import json
from pathlib import Path

import pytest

from fedloom.studies import STUDIES, compression

RESULTS = Path(__file__).parents[2] / "benchmarks/results/studies/compression/results.json"


@pytest.mark.mnist
def test_quick_compression_study_runs_and_writes_its_figure(tmp_path, mnist):
    results = compression.run(tmp_path, quick=True)
    c = results["compressors"]
    assert list(c) == list(compression.COMPRESSORS)
    # the bytes of one update are the codes' exact sizes for the 2NN's 199,210 parameters
    assert c["float32"]["bytes_per_update"] == 4 * 199_210
    assert c["fp16"]["bytes_per_update"] == 2 * 199_210
    assert c["int8"]["bytes_per_update"] == 199_210 + 4
    assert c["int4 (blocks of 256)"]["bytes_per_update"] == 99_605 + 4 * 779
    assert c["QSGD s=16 (buckets of 512)"]["bytes_per_update"] == 149_408 + 4 * 390
    assert c["top-k 1% + EF"]["bytes_per_update"] == 1992 * 4 + 1992 * 4  # values + indices
    for v in c.values():
        assert len(v["accuracy"]) == 10 and 0.5 < v["final_accuracy"] <= 1.0
    assert results["claims"] == compression.claims(results)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["compressors"].keys() == c.keys()
    assert (tmp_path / "compression.png").stat().st_size > 10_000
    assert "compression" in STUDIES


def test_the_committed_full_results_hold_the_readme_claims():
    results = json.loads(RESULTS.read_text())
    s = results["setting"]
    assert (s["dataset"], s["model"], s["rounds"], len(s["seeds"])) == ("mnist", "mnist_2nn", 40, 2)
    assert results["claims"] == compression.claims(results)  # stored claims are the numbers'
    assert all(results["claims"].values())
