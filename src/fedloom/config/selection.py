"""``server.selection`` built into a selection rule (:mod:`fedloom.data.selection`)."""

from __future__ import annotations

from typing import Any

from fedloom.config.run import RunConfig
from fedloom.data.sampling import cohort_size
from fedloom.data.selection import SELECTIONS, Selection
from fedloom.errors import ConfigError

__all__ = ["build_selection"]

FIELD = "server.selection"
_OWN = {"d": "power_of_choice", "probability": "availability", "probabilities": "availability"}


def build_selection(config: RunConfig, num_clients: int) -> Selection | None:
    """The run's selection rule (``None``: the default uniform sampling); every problem is a
    :class:`ConfigError` naming its field."""
    section, server = config.server.selection, config.server
    if section is None:
        return None
    name = section.name
    if name not in SELECTIONS:
        raise ConfigError(f"{FIELD}.name: {name!r}; registered: {', '.join(SELECTIONS)}")
    problems = []
    for option, owner in _OWN.items():
        if getattr(section, option) is not None and name != owner:
            problems.append(f"{FIELD}.{option}: applies to {owner}, not {name}")
    if section.options and name in ("uniform", "power_of_choice", "availability"):
        problems.append(f"{FIELD}.options: for registered rules; {name} takes none")
    if name != "uniform":
        if server.sampling == "poisson":
            problems.append(
                f"{FIELD}: {name} picks a cohort of its own; server.sampling poisson cannot "
                "apply too (use uniform)"
            )
        if config.algorithm.name == "dp_fedavg":
            problems.append(
                f"{FIELD}: {name} makes who takes part depend on more than the sampling "
                "DP-FedAvg's accountant assumes; use uniform"
            )
        if server.secure_aggregation is not None and name == "availability":
            problems.append(
                f"{FIELD}: availability gives cohorts of varying size, while secure "
                "aggregation's threshold is set for a fixed cohort"
            )
    cohort = cohort_size(num_clients, server.fraction)
    options: dict[str, Any] = dict(section.options)
    if name == "power_of_choice":
        if section.d is None:
            problems.append(f"{FIELD}.d: power_of_choice needs d, its number of candidates")
        elif not cohort <= section.d <= num_clients:
            problems.append(
                f"{FIELD}.d: {section.d}; must be between the cohort size {cohort} and the "
                f"{num_clients} clients"
            )
        options["d"] = section.d
    if name == "availability":
        if section.probabilities is not None:
            if section.probability is not None:
                problems.append(f"{FIELD}: give probability or probabilities, not both")
            if len(section.probabilities) != num_clients:
                problems.append(
                    f"{FIELD}.probabilities: {len(section.probabilities)} values for "
                    f"{num_clients} clients"
                )
            options["probabilities"] = tuple(section.probabilities)
        else:
            options["probability"] = 1.0 if section.probability is None else section.probability
    if problems:
        raise ConfigError(problems)
    try:
        rule: Selection = SELECTIONS[name](**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{FIELD}: {name}: {exc}") from None
    return rule
