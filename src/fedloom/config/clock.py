"""The ``clock`` section: simulated time, device speeds and a round deadline.

The ``fedbuff`` section, which needs a clock, runs asynchronous FedBuff instead of rounds
(:mod:`fedloom.engine.fedbuff`).

Off by default (``clock: null``, no simulated time, the fingerprint of runs from before it
existed). Set, it gives every client a :class:`~fedloom.engine.clock.ClientProfile`, drawn
from log-normal distributions or read from a trace file, and the round loop reports
``sim_time_s`` (see :mod:`fedloom.engine.clock`). Simulation only: a deployed server
measures real time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from fedloom.aggregate.staleness import Staleness
from fedloom.engine.clock import Availability, LogNormal, VirtualClock, draw_profiles
from fedloom.engine.clock_trace import load_trace
from fedloom.engine.fedbuff import FedBuff
from fedloom.registry import Section

__all__ = [
    "AvailabilityConfig",
    "ClockConfig",
    "FedBuffConfig",
    "SpreadConfig",
    "StalenessConfig",
    "build_clock",
    "build_fedbuff",
]


class SpreadConfig(Section):
    """A log-normal distribution by its median and the standard deviation of its log."""

    median: Annotated[float, Field(gt=0)]
    sigma: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="0: every client gets the median; 1: a long tail (p90/p10 = 13)"
    )


class AvailabilityConfig(Section):
    """Each client online ``fraction`` of every ``period_s`` seconds, from a random phase."""

    period_s: Annotated[float, Field(gt=0)] = 86400.0
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0


class ClockConfig(Section):
    """Simulated time: device speeds, link bandwidths, availability and a round deadline."""

    speed: SpreadConfig = Field(
        default=SpreadConfig(median=100.0, sigma=1.0),
        description="local training speed in examples per second",
    )
    down_bps: SpreadConfig = Field(
        default=SpreadConfig(median=1e6, sigma=0.5), description="download bytes per second"
    )
    up_bps: SpreadConfig = Field(
        default=SpreadConfig(median=2.5e5, sigma=0.5), description="upload bytes per second"
    )
    availability: AvailabilityConfig | None = Field(
        default=None, description="daily online windows (default: always online)"
    )
    trace: str | None = Field(
        default=None,
        description="a CSV or JSON file with each client's speed, down_bps, up_bps and "
        "windows; replaces the distributions",
    )
    deadline_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="a round waits at most this long; later clients are dropped as stragglers",
    )

    @model_validator(mode="before")
    @classmethod
    def _partial_spreads(cls, raw: Any) -> Any:
        """``--set clock.speed.sigma=2`` keeps the default median (and the other way round)."""
        if not isinstance(raw, dict):
            return raw
        filled = dict(raw)
        for name in ("speed", "down_bps", "up_bps"):
            given = raw.get(name)
            if isinstance(given, dict):
                default = cls.model_fields[name].default.model_dump()
                filled[name] = {**default, **given}
        return filled


def build_clock(config: ClockConfig | None, num_clients: int, *, seed: int) -> VirtualClock | None:
    """The virtual clock of the ``clock`` section (``None`` when it is off)."""
    if config is None:
        return None
    if config.trace is not None:
        profiles = load_trace(config.trace, num_clients=num_clients)
    else:
        spread = {
            name: LogNormal(getattr(config, name).median, getattr(config, name).sigma)
            for name in ("speed", "down_bps", "up_bps")
        }
        online = config.availability
        profiles = draw_profiles(
            num_clients,
            **spread,
            availability=Availability(online.period_s, online.fraction) if online else None,
            seed=seed,
        )
    return VirtualClock(profiles, deadline_s=config.deadline_s)


class StalenessConfig(Section):
    """The weight of an update ``s`` versions stale (FedAsync's families)."""

    kind: Literal["constant", "polynomial", "hinge"] = Field(
        default="polynomial",
        description="constant: 1; polynomial: (1+s)^-a (a=0.5: FedBuff's 1/sqrt(1+s)); "
        "hinge: 1 up to b, then 1/(a(s-b)+1)",
    )
    a: Annotated[float, Field(ge=0)] = 0.5
    b: Annotated[float, Field(ge=0)] = 4.0


class FedBuffConfig(Section):
    """Asynchronous FedBuff on the virtual clock: ``rounds`` counts server steps."""

    buffer_size: Annotated[int, Field(ge=1)] = Field(
        default=10, description="K: updates buffered per server step"
    )
    concurrency: Annotated[int, Field(ge=1)] = Field(
        default=100, description="the most clients training at once"
    )
    staleness: StalenessConfig = StalenessConfig()


def build_fedbuff(config: FedBuffConfig) -> FedBuff:
    """The FedBuff settings of the ``fedbuff`` section."""
    weight = config.staleness
    return FedBuff(
        buffer_size=config.buffer_size,
        concurrency=config.concurrency,
        staleness=Staleness(weight.kind, a=weight.a, b=weight.b),
    )
