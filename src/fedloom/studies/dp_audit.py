"""An empirical privacy audit of fedloom's DP-FedAvg: canary clients, a membership test, and
a lower bound on epsilon with confidence intervals.

Differential privacy bounds every membership test: for neighbouring federations ``D`` (with
a client) and ``D'`` (without it, or with it replaced) and any test on the released models,
``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``. Measured rates
therefore give a *lower* bound on the epsilon the code really has (Jagielski et al. 2020,
"Auditing differentially private machine learning"; Nasr et al. 2021, "Adversary
instantiation: lower bounds for differentially private machine learning")::

    eps_lb = max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR))

with FPR and FNR replaced by their one-sided Clopper-Pearson upper bounds at level
``(1 - confidence) / 2`` each, so ``eps_lb`` holds with probability at least ``confidence``.
An ``eps_lb`` above the accountant's epsilon means the implementation (or its accounting)
leaks more than it claims.

The audit. Every run is one federation of ``M`` crafted clients, all in the cohort
(``N = M``, full participation), training ``rounds`` rounds through fedloom's own server
code: ``server_update`` with the ``dp_fedavg`` algorithm's pipeline (weighting, the clip
stage, the ``Sum`` reducer, the ``GaussianSumNoise`` stage). The released quantity is the
final global model. Half the clients are **canaries**: each submits ``+10 S e_j`` on its own
coordinate ``j`` (a Dirac canary, Nasr et al. 2021), which the clip stage must cut to
``S e_j``; the other half are **anti-canaries** submitting ``-10 S e_j``; the remaining
coordinates are touched by nobody. The membership test for the canary at ``j`` thresholds
the final model's coordinate ``j`` (the inner product of the release with the canary's
direction), rescaled to ``s = w_j M / (rounds S)``, which is ``+1`` for a canary, ``-1``
for an anti-canary and ``0`` for an absent client, plus the noise.

Two games, each a pair of neighbouring federations:

- **canary vs absent**: the canary at ``j`` or, in its place, a client whose update does not
  touch ``j`` (the empty coordinates). The sum moves by ``S``: add/remove one client, or
  replace it by a null client.
- **canary vs anti-canary**: the canary at ``j`` replaced by its mirror image. The sum moves
  by ``2 S``: the worst case of *replacing* one client, the neighbouring relation under which
  fedloom accounts fixed-size (uniform) sampling (``docs/PRIVACY.md``). This game found that
  the accountant was given ``z`` where replace-one needs ``z / 2``; it now gets ``z / 2``,
  and the results keep the old number next to the new one (``epsilon_before_the_fix``).

Trials in one run share nothing but the run: every crafted update lives on its own
coordinate and the noise is drawn independently per coordinate, so the ``K`` canary
coordinates are ``K`` independent positive trials and the empty (or anti-canary) coordinates
independent negative ones. This is the one-shot idea of Andrew et al. 2024 ("One-shot
empirical privacy estimation for federated learning": many canaries inserted in one training
run, each tested on its own direction) with exactly orthogonal directions, so the trials are
exactly independent rather than approximately; many runs with independent seeds add more.
The audit checks the two properties it relies on (the measured noise std of the empty
coordinates, and their correlation with their neighbours) and reports them.

The threshold is chosen on separate calibration runs (the one maximizing the bound there) and
the bound is computed once, on fresh evaluation runs; selecting it on the evaluation trials
would make the confidence statement false. The accountant's epsilon is the ``dp_epsilon``
that the ``GaussianSumNoise`` stage itself reports after the run (uniform sampling of ``M``
of ``N = M`` clients, RDP, at ``delta``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.algorithms import pipeline_metrics, server_init, server_update
from fedloom.privacy import PrivacySetting, epsilon
from fedloom.privacy.dp_fedavg import dp_fedavg
from fedloom.studies._results import json_safe, write_results
from fedloom.types import ClientResult

__all__ = [
    "NOISE_MULTIPLIERS",
    "AuditSetting",
    "audit",
    "clopper_pearson_upper",
    "epsilon_lower_bound",
    "run",
    "table",
]

NOISE_MULTIPLIERS = (0.0, 0.5, 1.0)
CANARY_SCALE = 10.0  # a crafted update's norm, in clip norms: the clip stage must cut it
THRESHOLDS = np.round(np.arange(-3.0, 8.0, 0.01), 2)  # candidate thresholds on the score s


@dataclass(frozen=True)
class AuditSetting:
    """The audit's size: per run ``canaries`` canaries and as many anti-canaries on
    ``coordinates`` coordinates (the rest empty), ``calibration_runs`` runs to choose the
    threshold and ``runs`` to measure."""

    coordinates: int = 30_000  # below torch's 32,768-element grain: no threads per op
    canaries: int = 1_000
    calibration_runs: int = 40
    runs: int = 200
    rounds: int = 1
    clip_norm: float = 1.0
    delta: float = 1e-5
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.canaries < 1 or self.coordinates < 2 * self.canaries + 2:
            raise ValueError(
                f"an audit needs canaries >= 1 and coordinates >= 2 * canaries + 2 (room for "
                f"the empty coordinates); got {self.canaries} and {self.coordinates}"
            )
        if self.runs < 1 or self.calibration_runs < 1 or self.rounds < 1:
            raise ValueError("runs, calibration_runs and rounds must be >= 1")

    @property
    def clients(self) -> int:
        """M = N: every crafted client takes part in every round."""
        return 2 * self.canaries


FULL = AuditSetting()
QUICK = AuditSetting(coordinates=5_000, canaries=100, calibration_runs=10, runs=40)


def _dirac(num_params: int, index: int, value: float) -> torch.Tensor:
    update = torch.zeros(num_params)
    update[index] = value
    return update


def _crafted(setting: AuditSetting) -> Iterator[ClientResult]:
    """The run's clients: canaries on coordinates ``[0, K)``, anti-canaries on ``[K, 2K)``."""
    big = CANARY_SCALE * setting.clip_norm
    for client in range(setting.clients):
        sign = 1.0 if client < setting.canaries else -1.0
        yield ClientResult(
            client_id=client,
            update=_dirac(setting.coordinates, client, sign * big),
            buffers=torch.zeros(0),
            num_examples=1,
            num_steps=1,
            num_example_passes=1,
            train_loss=0.0,
        )


def released_scores(
    noise_multiplier: float, setting: AuditSetting, seed: int
) -> tuple[torch.Tensor, float]:
    """One run through fedloom's server code: the final model's coordinates as scores
    ``s = w M / (rounds S)`` (float64 ``[coordinates]``), and the ``dp_epsilon`` the noise
    stage reports for the run."""
    algorithm = dp_fedavg(setting.clip_norm, noise_multiplier, setting.delta)
    start = torch.zeros(setting.coordinates)
    state = server_init(algorithm, start, torch.zeros(0))
    for _ in range(setting.rounds):
        state = server_update(
            algorithm,
            state,
            _crafted(setting),
            num_clients=setting.clients,
            cohort_size=setting.clients,
            seed=seed,
            average_buffers=False,
        )
    released = state.params - start
    scores = released.double() * setting.clients / (setting.rounds * setting.clip_norm)
    return scores, pipeline_metrics(algorithm, state)["dp_epsilon"]


def clopper_pearson_upper(successes: np.ndarray, trials: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bounds at level ``alpha`` on binomial proportions
    (``P[p > bound] <= alpha``): the ``1 - alpha`` quantile of Beta(k + 1, n - k); 1 at k = n."""
    from scipy.stats import beta

    k = np.asarray(successes, dtype=np.float64)
    bound = beta.ppf(1.0 - alpha, k + 1.0, np.maximum(trials - k, 1.0))
    return np.where(k >= trials, 1.0, bound)


def epsilon_lower_bound(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """``max(log((1 - delta - FPR) / FNR), log((1 - delta - FNR) / FPR), 0)`` elementwise
    (a term whose numerator is not positive, or whose denominator is 0, gives nothing)."""
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.log((1.0 - delta - fpr) / fnr)
        two = np.log((1.0 - delta - fnr) / fpr)
    one = np.where((1.0 - delta - fpr > 0) & (fnr > 0), one, 0.0)
    two = np.where((1.0 - delta - fnr > 0) & (fpr > 0), two, 0.0)
    return np.maximum(np.maximum(one, two), 0.0)


def _rates(positives: np.ndarray, negatives: np.ndarray, thresholds: np.ndarray) -> Any:
    """For the test "member iff s > threshold": false negatives and false positives (counts)."""
    false_negatives = np.searchsorted(np.sort(positives), thresholds, side="right")
    false_positives = negatives.size - np.searchsorted(np.sort(negatives), thresholds, side="right")
    return false_negatives, false_positives


def _bounds(
    positives: np.ndarray, negatives: np.ndarray, thresholds: np.ndarray, setting: AuditSetting
) -> dict[str, np.ndarray]:
    alpha = (1.0 - setting.confidence) / 2  # two one-sided bounds: jointly `confidence`
    fn, fp = _rates(positives, negatives, thresholds)
    fnr_upper = clopper_pearson_upper(fn, positives.size, alpha)
    fpr_upper = clopper_pearson_upper(fp, negatives.size, alpha)
    return {
        "fn": fn,
        "fp": fp,
        "fnr_upper": fnr_upper,
        "fpr_upper": fpr_upper,
        "eps_lb": epsilon_lower_bound(fpr_upper, fnr_upper, setting.delta),
    }


def _game(
    calibration: tuple[np.ndarray, np.ndarray],
    evaluation: tuple[np.ndarray, np.ndarray],
    setting: AuditSetting,
) -> dict[str, Any]:
    """Choose the threshold on the calibration trials, then measure on the evaluation ones."""
    bound = _bounds(*calibration, THRESHOLDS, setting)["eps_lb"]
    best = np.flatnonzero(bound >= bound.max())  # ties (z = 0): the middle of the range
    threshold = float(THRESHOLDS[best[len(best) // 2]])
    positives, negatives = evaluation
    measured = _bounds(positives, negatives, np.array([threshold]), setting)
    fn, fp = int(measured["fn"][0]), int(measured["fp"][0])
    return {
        "threshold": threshold,
        "eps_lb": float(measured["eps_lb"][0]),
        "tpr": 1.0 - fn / positives.size,
        "fpr": fp / negatives.size,
        "fnr_upper": float(measured["fnr_upper"][0]),
        "fpr_upper": float(measured["fpr_upper"][0]),
        "positives": int(positives.size),
        "negatives": int(negatives.size),
        "false_negatives": fn,
        "false_positives": fp,
    }


def audit(noise_multiplier: float, setting: AuditSetting, *, seed: int = 0) -> dict[str, Any]:
    """Audit DP-FedAvg at one noise multiplier: both games, the accountant's epsilon and the
    checks the audit relies on."""
    k = setting.canaries
    groups: dict[str, list[list[np.ndarray]]] = {
        part: [[], []] for part in ("canary", "anti", "absent")
    }
    noise_std, neighbour_corr = [], []
    accountant = math.nan
    for i in range(setting.calibration_runs + setting.runs):
        scores, accountant = released_scores(noise_multiplier, setting, seed * 1_000_003 + i)
        phase = 0 if i < setting.calibration_runs else 1
        empty = scores[2 * k :]
        groups["canary"][phase].append(scores[:k].numpy())
        groups["anti"][phase].append(scores[k : 2 * k].numpy())
        groups["absent"][phase].append(empty.numpy())
        if noise_multiplier > 0:
            noise_std.append(float(empty.std()) * math.sqrt(setting.rounds))
            centred = empty - empty.mean()
            neighbour_corr.append(float((centred[1:] * centred[:-1]).mean() / centred.var()))
    pooled = {part: [np.concatenate(p) for p in phases] for part, phases in groups.items()}
    games = {
        "absent": _game(
            (pooled["canary"][0], pooled["absent"][0]),
            (pooled["canary"][1], pooled["absent"][1]),
            setting,
        ),
        "anti": _game(
            (pooled["canary"][0], pooled["anti"][0]),
            (pooled["canary"][1], pooled["anti"][1]),
            setting,
        ),
    }
    # what the accountant said before the audit's finding was fixed: it was given z where
    # replace-one needs z / 2 (now done inside epsilon(), so 2 z reproduces the old number)
    privacy = PrivacySetting(
        setting.clients, setting.clients, setting.rounds, setting.delta, "uniform", "rdp"
    )
    return {
        "noise_multiplier": noise_multiplier,
        "accountant_epsilon": accountant,
        "epsilon_before_the_fix": epsilon(privacy, 2 * noise_multiplier),
        "canary_vs_absent": games["absent"],
        "canary_vs_anti_canary": games["anti"],
        "checks": {
            "noise_std_over_z": (float(np.mean(noise_std)) / noise_multiplier)
            if noise_std
            else None,
            "neighbour_correlation": float(np.mean(neighbour_corr)) if neighbour_corr else None,
            "canary_score_mean": float(np.mean(pooled["canary"][1])),
            "anti_canary_score_mean": float(np.mean(pooled["anti"][1])),
        },
    }


def run(
    out_dir: Path | None = None,
    *,
    quick: bool = False,
    noise_multipliers: tuple[float, ...] = NOISE_MULTIPLIERS,
    setting: AuditSetting | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Audit every noise multiplier; return (and write) the table and the trials' counts."""
    setting = setting or (QUICK if quick else FULL)
    started = time.perf_counter()
    rows = [audit(z, setting, seed=seed) for z in noise_multipliers]
    results = {
        "setting": {
            **asdict(setting),
            "clients": setting.clients,
            "canary_norm_over_clip": CANARY_SCALE,
            "sampling": "uniform, N = M (every client in every round)",
            "accountant": "GaussianSumNoise's dp_epsilon (uniform sampling, RDP)",
            "seed": seed,
        },
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    write_results(out_dir, "dp_audit", json_safe(results))
    if out_dir is not None:
        _plot(results, out_dir / "dp_audit.png")
    return results


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    labels = [f"z = {r['noise_multiplier']:g}" for r in rows]
    series = {
        "accountant (fedloom's dp_epsilon)": [r["accountant_epsilon"] for r in rows],
        "accountant before the fix (z, not z / 2)": [r["epsilon_before_the_fix"] for r in rows],
        "audit: canary vs absent": [r["canary_vs_absent"]["eps_lb"] for r in rows],
        "audit: canary vs anti-canary": [r["canary_vs_anti_canary"]["eps_lb"] for r in rows],
    }
    finite = [v for values in series.values() for v in values if math.isfinite(v)]
    top = max(finite) * 1.25 if finite else 1.0
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.2
    colors = ("#4c72b0", "#8172b2", "#55a868", "#c44e52")
    for s, (values, color) in enumerate(zip(series.values(), colors, strict=True)):
        xs = [i + (s - 1.5) * width for i in range(len(rows))]
        heights = [min(v, top) for v in values]
        hatch = ["//" if not math.isfinite(v) else "" for v in values]
        for x, h, v, pattern in zip(xs, heights, values, hatch, strict=True):
            ax.bar(x, h, width, color=color, hatch=pattern)
            ax.text(x, h, "inf" if not math.isfinite(v) else f"{v:.2f}", ha="center",
                    va="bottom", fontsize=7)  # fmt: skip
    for name, color in zip(series, colors, strict=True):
        ax.bar(0, 0, 0, color=color, label=name)  # plain legend entries (no hatching)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylim(0, top * 1.08)
    ax.set_ylabel(f"epsilon at delta = {results['setting']['delta']:g}")
    confidence = results["setting"]["confidence"]
    ax.set_title(
        f"DP-FedAvg audit: empirical lower bounds ({confidence:.0%} confidence) vs the accountant"
    )
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(results: dict[str, Any]) -> Any:
    """The audit as a rich table: one row per noise multiplier."""
    from rich.table import Table

    confidence = results["setting"]["confidence"]
    out = Table(
        title=f"DP-FedAvg audit: epsilon lower bounds at {confidence:.0%} confidence "
        f"(delta {results['setting']['delta']:g})"
    )
    columns = ("z", "acct eps", "before fix", "lb absent", "TPR", "FPR", "lb anti", "TPR", "FPR")
    for column in columns:  # the FPRs in full; the headers wrap on a narrow terminal
        out.add_column(column, justify="right", min_width=7 if column == "FPR" else None)
    for row in results["rows"]:
        absent, anti = row["canary_vs_absent"], row["canary_vs_anti_canary"]
        out.add_row(
            f"{row['noise_multiplier']:g}",
            f"{row['accountant_epsilon']:.2f}",
            f"{row['epsilon_before_the_fix']:.2f}",
            f"{absent['eps_lb']:.2f}",
            f"{absent['tpr']:.3f}",
            f"{absent['fpr']:.1e}",
            f"{anti['eps_lb']:.2f}",
            f"{anti['tpr']:.3f}",
            f"{anti['fpr']:.1e}",
        )
    return out
