"""A virtual clock: each client's simulated time to serve a request, without sleeping.

Cross-device federations are slow and unequal: phones differ tenfold in compute speed and
link bandwidth and are online only part of the day. Research on them needs *simulated*
time (FedScale, Lai et al. 2022; FedBuff, Nguyen et al. 2022, section 5), so this module
computes when each client's update would arrive and the round loop (or the asynchronous
FedBuff loop) reads the times instead of waiting for them.

A client is a :class:`ClientProfile`: a compute speed in examples per second, a download and
an upload bandwidth in bytes per second, and the windows of time in which it is online. A
request sent at ``start_s`` is served as (:func:`client_timing`)::

    begin   = start_s, or the start of the client's next online window when it is offline
    finish  = begin + down_bytes / down_bps + examples / speed + up_bytes / up_bps

where ``examples`` is the client's *actual* local work (the examples it passed through its
model, summed over its local steps, as its result reports) and the bytes are those the run
counts on the wire. The job must fit in the online window it began in: a client whose window
closes first goes offline at the window's end and its work is lost.

Profiles come from seeded distributions (:func:`draw_profiles`: log-normal speeds and
bandwidths, the long tail of real devices, and periodic availability with a random phase) or
from a trace file (:mod:`fedloom.engine.clock_trace`). A :class:`VirtualClock` adds the round
deadline: clients whose update would arrive after it are dropped as stragglers
(:func:`round_timing`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedloom.rng import numpy_rng
from fedloom.types import ClientFailure, ClientResult

__all__ = [
    "Availability",
    "ClientProfile",
    "ClientTiming",
    "LogNormal",
    "RoundTiming",
    "VirtualClock",
    "apply_clock",
    "client_timing",
    "draw_profiles",
    "round_timing",
]

Window = tuple[float, float]


@dataclass(frozen=True)
class ClientProfile:
    """One client's device: speeds and availability.

    Attributes:
        speed: local training throughput in examples per second (> 0).
        down_bps, up_bps: link bandwidth from and to the server, bytes per second (> 0).
        windows: the ``[start, end)`` intervals, in seconds, in which the client is online,
            sorted and disjoint; ``()``: always online.
        period_s: the windows repeat every ``period_s`` seconds (a daily pattern); ``None``:
            they happen once, and after the last one the client is gone for good.
    """

    speed: float
    down_bps: float
    up_bps: float
    windows: tuple[Window, ...] = ()
    period_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("speed", "down_bps", "up_bps"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.period_s is not None and not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"period_s must be a finite number > 0, got {self.period_s!r}")
        problem = check_windows(self.windows, self.period_s)
        if problem is not None:
            raise ValueError(problem)

    def online_window(self, t: float) -> Window | None:
        """The online window holding time ``t``, else the next one; ``None`` when the client
        is never online again."""
        if not self.windows:
            return (-math.inf, math.inf)
        if self.period_s is None:
            return next(((s, e) for s, e in self.windows if e > t), None)
        p = self.period_s
        candidates = []
        for s, e in self.windows:
            n = math.floor((t - s) / p)
            for k in (n - 1, n, n + 1):
                if e + k * p > t:
                    candidates.append((s + k * p, e + k * p))
        return min(candidates)


def check_windows(windows: Sequence[Window], period_s: float | None) -> str | None:
    """Why ``windows`` are not sorted disjoint ``[start, end)`` intervals (within one
    period when ``period_s`` is set), or ``None`` when they are."""
    previous_end = -math.inf
    for i, window in enumerate(windows):
        if len(window) != 2:
            return f"windows[{i}] must be a pair [start, end], got {window!r}"
        start, end = window
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            return f"windows[{i}] = {list(window)}: start and end must be finite, start >= 0"
        if end <= start:
            return f"windows[{i}] = {list(window)}: end must be after start"
        if start < previous_end:
            return (
                f"windows[{i}] = {list(window)} overlaps or precedes the window before it "
                f"(ending at {previous_end:g}); windows must be sorted and disjoint"
            )
        previous_end = end
    if period_s is not None and windows and windows[-1][1] > windows[0][0] + period_s:
        return (
            f"windows end at {windows[-1][1]:g}, past the first window's start plus period_s "
            f"({windows[0][0]:g} + {period_s:g}): a window would overlap its own repetition"
        )
    return None


@dataclass(frozen=True)
class ClientTiming:
    """One client's simulated job, in seconds of the virtual clock.

    ``finish_s`` is when the update arrives; ``offline_s`` is set instead (and ``finish_s``
    is infinite) when the client went offline before finishing, or was never online again.
    """

    client_id: int
    start_s: float
    begin_s: float
    download_s: float
    compute_s: float
    upload_s: float
    finish_s: float
    offline_s: float | None = None

    @property
    def completed(self) -> bool:
        return self.offline_s is None

    @property
    def end_s(self) -> float:
        """When the server learns the job's outcome: the update's arrival or the dropout."""
        return self.finish_s if self.offline_s is None else self.offline_s


def client_timing(
    profile: ClientProfile,
    *,
    client_id: int,
    start_s: float,
    examples: float,
    down_bytes: float,
    up_bytes: float,
) -> ClientTiming:
    """When a request sent at ``start_s`` for ``examples`` examples of local work comes back.

    >>> p = ClientProfile(speed=100.0, down_bps=1000.0, up_bps=500.0)
    >>> client_timing(p, client_id=0, start_s=10.0, examples=300, down_bytes=2000,
    ...               up_bytes=2000).finish_s  # 10 + 2 + 3 + 4
    19.0
    """
    window = profile.online_window(start_s)
    if window is None:
        return ClientTiming(client_id, start_s, math.inf, 0.0, 0.0, 0.0, math.inf, start_s)
    begin = float(max(start_s, window[0]))
    download = float(down_bytes) / profile.down_bps
    compute = float(examples) / profile.speed  # float: a NumPy count stays out of the metrics
    upload = float(up_bytes) / profile.up_bps
    finish = begin + download + compute + upload
    if finish > window[1]:
        return ClientTiming(
            client_id, start_s, begin, download, compute, upload, math.inf, window[1]
        )
    return ClientTiming(client_id, start_s, begin, download, compute, upload, finish)


@dataclass(frozen=True)
class VirtualClock:
    """Every client's profile (indexed by client id) and the round deadline.

    ``deadline_s``: a synchronous round waits at most this long after it starts; clients
    whose update would arrive later are dropped as stragglers. ``None``: the round waits for
    its slowest client.
    """

    profiles: tuple[ClientProfile, ...]
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s!r}")

    def profile(self, client_id: int) -> ClientProfile:
        if not 0 <= client_id < len(self.profiles):
            raise ValueError(
                f"the virtual clock has profiles for clients 0..{len(self.profiles) - 1}, "
                f"not for client {client_id}; give one profile per client"
            )
        return self.profiles[client_id]


@dataclass(frozen=True)
class RoundTiming:
    """A synchronous round on the virtual clock.

    ``on_time``: ids whose update arrived by the deadline; ``missed``: ids whose update would
    have arrived after it; ``offline``: ids that went offline (or never came online) before
    finishing, when the server learned it (by the deadline). ``end_s``: when the round closed.
    """

    start_s: float
    end_s: float
    on_time: tuple[int, ...]
    missed: tuple[int, ...]
    offline: tuple[int, ...]


def round_timing(
    timings: Sequence[ClientTiming], *, start_s: float, deadline_s: float | None
) -> RoundTiming:
    """Who made the round's deadline and when the round closed.

    The round closes when the server has heard from every client (an update or a dropout),
    or at ``start_s + deadline_s`` when someone is still missing then. A client is missed
    exactly when its finish time exceeds the deadline (arriving at the deadline counts).
    """
    cutoff = math.inf if deadline_s is None else start_s + deadline_s
    on_time = tuple(t.client_id for t in timings if t.completed and t.finish_s <= cutoff)
    missed = tuple(t.client_id for t in timings if t.completed and t.finish_s > cutoff)
    offline = tuple(t.client_id for t in timings if not t.completed and t.end_s <= cutoff)
    heard = [t.end_s for t in timings if t.end_s <= cutoff]
    end = cutoff if len(heard) < len(timings) else max(heard, default=start_s)
    return RoundTiming(start_s, max(end, start_s), on_time, missed, offline)


@dataclass(frozen=True)
class LogNormal:
    """``median * exp(sigma * z)``, ``z ~ N(0, 1)``: a long tail for ``sigma`` near 1 and
    more (the ratio of the 90th to the 10th percentile is ``exp(2.56 sigma)``, 13x at
    ``sigma = 1``); ``sigma = 0`` is the constant ``median``."""

    median: float
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.median) and self.median > 0):
            raise ValueError(f"median must be a finite number > 0, got {self.median!r}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be >= 0, got {self.sigma!r}")


@dataclass(frozen=True)
class Availability:
    """Each client is online ``fraction`` of every ``period_s`` seconds, from a phase drawn
    uniformly per client (``fraction = 1``: always online)."""

    period_s: float = 86400.0
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ValueError(f"period_s must be > 0, got {self.period_s!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")


def draw_profiles(
    num_clients: int,
    *,
    speed: LogNormal,
    down_bps: LogNormal,
    up_bps: LogNormal,
    availability: Availability | None = None,
    seed: int,
) -> tuple[ClientProfile, ...]:
    """One profile per client, drawn from the run seed (each field its own stream, so
    changing one distribution leaves the others' draws as they were)."""

    def draw(spread: LogNormal, purpose: str) -> list[float]:
        z = numpy_rng(seed, "clock", _KEYS[purpose]).standard_normal(num_clients)
        return [float(spread.median * math.exp(spread.sigma * v)) for v in z]

    speeds, downs, ups = draw(speed, "speed"), draw(down_bps, "down"), draw(up_bps, "up")
    windows: list[tuple[Window, ...]] = [()] * num_clients
    period = None
    if availability is not None and availability.fraction < 1:
        period = availability.period_s
        phases = numpy_rng(seed, "clock", _KEYS["phase"]).uniform(0, period, num_clients)
        span = availability.fraction * period
        windows = [((float(p), float(p) + span),) for p in phases]
    return tuple(
        ClientProfile(speeds[k], downs[k], ups[k], windows[k], period if windows[k] else None)
        for k in range(num_clients)
    )


_KEYS = {"speed": 0, "down": 1, "up": 2, "phase": 3}


def apply_clock(
    clock: VirtualClock,
    results: Sequence[ClientResult],
    *,
    start_s: float,
    down_bytes: float,
    up_bytes: float | Mapping[int, float],
) -> tuple[list[ClientResult], list[ClientFailure], RoundTiming]:
    """A synchronous round's results on the clock: ``(on time, failures, timing)``.

    Each result's job is timed with its actual local work (``num_example_passes``); updates
    that would arrive after the deadline, and clients that went offline first, become
    :class:`~fedloom.types.ClientFailure` values, which the round loop judges by its failure
    policy like any other failure (``"skip"`` drops them as stragglers). ``up_bytes``: what
    every client sends, or each client's by id (updates compressed to different sizes).
    """
    timings = [
        client_timing(
            clock.profile(r.client_id),
            client_id=r.client_id,
            start_s=start_s,
            examples=r.num_example_passes,
            down_bytes=down_bytes,
            up_bytes=up_bytes if isinstance(up_bytes, int | float) else up_bytes[r.client_id],
        )
        for r in results
    ]
    timing = round_timing(timings, start_s=start_s, deadline_s=clock.deadline_s)
    on_time = set(timing.on_time)
    failures = []
    for t in timings:
        if t.client_id in on_time:
            continue
        if t.completed:
            reason = (
                f"missed the round deadline: its update would arrive {t.finish_s - start_s:.4g} s "
                f"after the round started, the deadline is {clock.deadline_s:g} s"
            )
        elif math.isinf(t.begin_s):
            reason = f"never online again after {start_s:.4g} s (virtual clock)"
        else:
            reason = f"went offline at {t.offline_s:.4g} s before finishing (virtual clock)"
        failures.append(ClientFailure(t.client_id, reason))
    return [r for r in results if r.client_id in on_time], failures, timing
