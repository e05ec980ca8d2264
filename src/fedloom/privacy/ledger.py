"""How a DP round's cohort was sampled, as the privacy ledger records it and the
accountant needs it: the population, the scheme, the (expected) cohort and the rate.

The noise stage (:mod:`fedloom.privacy.dp_fedavg`) reads it from each round's
:class:`~fedloom.aggregate.RoundInfo`, keeps it in its ledger, and refuses a round sampled
otherwise than the rounds already composed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedloom.aggregate import RoundInfo

__all__ = ["Mechanism", "describe_mechanism", "recorded_mechanism", "round_mechanism"]

Mechanism = dict[str, Any]
"""How a round's cohort was sampled, as the ledger records it: ``population`` N,
``sampling``, ``cohort`` (M exactly, or ``q N`` expected) and ``rate`` q."""


def round_mechanism(info: RoundInfo) -> Mechanism | None:
    """The round's sampling as the accountant needs it, or ``None`` when ``info`` lacks it."""
    n = info.num_clients
    if n is None:
        return None
    if info.sampling == "poisson":
        if info.sampling_rate is None:
            return None
        q = info.sampling_rate
        return {"population": n, "sampling": "poisson", "cohort": q * n, "rate": q}
    if info.sampling != "uniform" or info.cohort_size is None:
        return None
    m = info.cohort_size
    return {"population": n, "sampling": "uniform", "cohort": m, "rate": m / n}


def recorded_mechanism(ledger: Mapping[str, Any]) -> Mechanism:
    """The sampling the ledger's rounds ran with (a ledger from before fedloom knew Poisson
    sampling holds uniform rounds only)."""
    n, m = ledger["population"], ledger["cohort"]
    sampling = ledger.get("sampling") or "uniform"
    rate = ledger.get("rate")
    return {
        "population": n,
        "sampling": sampling,
        "cohort": m,
        "rate": rate if rate is not None else (m / n if n else 0.0),
    }


def describe_mechanism(mechanism: Mechanism) -> str:
    """The mechanism in words, for the error that refuses a round sampled otherwise."""
    n, q = mechanism["population"], mechanism["rate"]
    if mechanism["sampling"] == "poisson":
        return f"poisson sampling of {n} clients at q = {q:g}"
    return f"uniform sampling of {mechanism['cohort']} of {n} clients"
