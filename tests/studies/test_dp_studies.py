"""The DP studies' claims, asserted on their own (quick) numbers, and the audit's statistics."""

import json
import math

import numpy as np
import pytest

from fedloom.aggregate import Clip
from fedloom.studies import STUDIES, dp_audit, dp_tradeoff


def test_dp_studies_are_registered():
    assert {"dp-audit", "dp-tradeoff"} <= set(STUDIES)


def test_clopper_pearson_upper_bounds_and_the_epsilon_lower_bound():
    alpha = 0.025
    # no successes in n trials: the bound solves (1 - p)^n = alpha
    assert dp_audit.clopper_pearson_upper(np.array([0]), 1000, alpha)[0] == pytest.approx(
        1 - alpha ** (1 / 1000), rel=1e-9
    )
    assert dp_audit.clopper_pearson_upper(np.array([10]), 10, alpha)[0] == 1.0
    # k of n: the upper bound covers k/n and P[Binomial(n, bound) <= k] = alpha
    from scipy.stats import binom

    bound = dp_audit.clopper_pearson_upper(np.array([37]), 500, alpha)[0]
    assert bound > 37 / 500
    assert binom.cdf(37, 500, bound) == pytest.approx(alpha, rel=1e-6)
    delta = 1e-5
    lb = dp_audit.epsilon_lower_bound
    assert lb(np.array([0.5]), np.array([0.5]), delta)[0] == 0.0  # a coin flip proves nothing
    assert lb(np.array([0.01]), np.array([0.2]), delta)[0] == pytest.approx(
        math.log((1 - delta - 0.2) / 0.01)
    )
    assert lb(np.array([0.2]), np.array([0.01]), delta)[0] == pytest.approx(
        math.log((1 - delta - 0.2) / 0.01)
    )
    assert lb(np.array([1.0]), np.array([0.0]), delta)[0] == 0.0  # never says "member"


def test_dp_audit_detects_canaries_without_noise_and_stays_below_the_accountant(tmp_path):
    results = dp_audit.run(tmp_path, quick=True)
    rows = {row["noise_multiplier"]: row for row in results["rows"]}
    assert set(rows) == {0.0, 0.5, 1.0}
    plain = rows[0.0]
    assert plain["accountant_epsilon"] == math.inf
    for game in ("canary_vs_absent", "canary_vs_anti_canary"):
        assert plain[game]["tpr"] == 1.0 and plain[game]["fpr"] == 0.0
        # perfect separation: the bound is only limited by the number of trials
        assert plain[game]["eps_lb"] > 6.5
    # the clip stage cut every crafted update (norm 10 S) to S: scores average +1 and -1
    assert plain["checks"]["canary_score_mean"] == pytest.approx(1.0, abs=1e-5)
    assert plain["checks"]["anti_canary_score_mean"] == pytest.approx(-1.0, abs=1e-5)
    for z in (0.5, 1.0):
        row = rows[z]
        assert math.isfinite(row["accountant_epsilon"])
        absent, anti = row["canary_vs_absent"], row["canary_vs_anti_canary"]
        # the canaries are seen through the noise, but no more than the accountant allows
        assert 0.5 < absent["eps_lb"] < row["accountant_epsilon"]
        assert 0.5 < anti["eps_lb"] < row["accountant_epsilon"]  # replace-one: z / 2 inside
        assert absent["positives"] == 100 * 40 and absent["negatives"] == 4800 * 40
        assert row["checks"]["noise_std_over_z"] == pytest.approx(1.0, abs=0.02)
        assert abs(row["checks"]["neighbour_correlation"]) < 0.02
    # more noise, smaller bounds
    assert rows[1.0]["canary_vs_absent"]["eps_lb"] < rows[0.5]["canary_vs_absent"]["eps_lb"]
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["study"] == "dp_audit"
    assert written["rows"][0]["accountant_epsilon"] == "inf"
    assert written["provenance"]["machine"]["cores"] >= 1
    assert (tmp_path / "dp_audit.png").stat().st_size > 10_000
    assert dp_audit.table(results).row_count == 3


def test_dp_audit_catches_a_clip_stage_that_does_not_clip(monkeypatch):
    # a bug the audit exists for: updates reach the sum unclipped (here: clipped at 100 S),
    # so a canary moves the sum by 10 S and the lower bound passes the accountant's epsilon
    import fedloom.privacy.dp_fedavg as module

    monkeypatch.setattr(module, "clip", lambda max_norm: Clip(100 * max_norm))
    row = dp_audit.audit(2.0, dp_audit.QUICK)  # the accountant's epsilon 4.7: room to exceed
    assert row["canary_vs_absent"]["eps_lb"] > row["accountant_epsilon"] + 1.0


@pytest.mark.slow
def test_dp_tradeoff_more_noise_smaller_epsilon_and_lower_accuracy(tmp_path):
    results = dp_tradeoff.run(tmp_path, quick=True)
    rows = results["rows"]
    zs = [row["noise_multiplier"] for row in rows]
    assert zs == sorted(zs) and zs[0] == 0.0 and len(zs) == 4
    epsilons = [row["epsilon"] for row in rows]
    assert epsilons[0] == math.inf
    assert all(a > b for a, b in zip(epsilons, epsilons[1:], strict=False))
    accuracy = [row["test_accuracy"] for row in rows]
    assert accuracy[0] >= accuracy[-1]
    assert accuracy[0] > 0.8  # without noise the quick run learns digits
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["study"] == "dp_tradeoff" and written["rows"][0]["epsilon"] == "inf"
    assert (tmp_path / "dp_tradeoff.png").stat().st_size > 10_000
    assert dp_tradeoff.table(results).row_count == 4
