"""Asynchronous FedBuff on the virtual clock (Nguyen et al. 2022, "Federated Learning with
Buffered Asynchronous Aggregation", Algorithm 1).

A synchronous round waits for its slowest client. FedBuff does not wait: up to
``concurrency`` clients train at once, each on the model version it pulled when it started;
their updates go into a buffer as they arrive, and every ``buffer_size`` (K) updates the
server applies one step

    x <- x + eta_g * (1 / K) * sum_i w(s_i) * Delta_i

where ``s_i`` is the update's staleness (server versions applied since its client pulled)
and ``w`` a :class:`~fedloom.aggregate.staleness.Staleness` weight (``1 / sqrt(1 + s)`` by
default). A new client starts as soon as another finishes.

The server step is the algorithm's own aggregation pipeline applied to the K buffered
results, each update scaled by ``w(s_i)`` first: the paper's server is
``fedavg(weighting="uniform", server_lr=eta_g)``; example weighting, clipping, robust
reducers and server optimizers (FedAdam) compose the same way. With ``concurrency = K`` and
every client equally fast, no update is stale and each step is a synchronous FedAvg round.

In simulation the clock is virtual (:mod:`fedloom.engine.clock`): a client is trained when
it starts, on the version it pulled, and its update is queued at its simulated finish time
(download + its actual local work + upload); events are processed in finish-time order,
ties by start order, so the run is a deterministic function of the seed.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from fedloom.aggregate.staleness import Staleness
from fedloom.algorithms import (
    Algorithm,
    ServerState,
    pipeline_metrics,
    prepare_plans,
    server_init,
    server_update,
)
from fedloom.client import LocalContext, LocalTraining
from fedloom.engine.callbacks import Callback, History, notify_round
from fedloom.engine.clock import ClientTiming, VirtualClock, client_timing
from fedloom.engine.executor import Executor
from fedloom.engine.failures import OnClientError, check_on_client_error, judge_failures
from fedloom.engine.loop import BYTES_PER_VALUE, Evaluate, _train_metrics
from fedloom.engine.validation import UpdatePolicy, validate_updates
from fedloom.errors import FedloomError
from fedloom.rng import derive_seed, numpy_rng
from fedloom.types import ClientFailure, ClientPlan, ClientResult, RoundReport

__all__ = ["FedBuff", "buffered_step", "run_fedbuff"]

log = logging.getLogger("fedloom")


@dataclass(frozen=True)
class FedBuff:
    """FedBuff's settings.

    Attributes:
        buffer_size: K, the updates per server step (the paper's default is 10).
        concurrency: the most clients training at once (at most the population).
        staleness: the weight of an update ``s`` versions stale.
    """

    buffer_size: int = 10
    concurrency: int = 100
    staleness: Staleness = Staleness()

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {self.buffer_size}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")


@dataclass(frozen=True)
class _Job:
    """One client's training on one pulled version, on the clock."""

    seq: int
    plan: ClientPlan
    version: int
    outcome: ClientResult | ClientFailure
    timing: ClientTiming


def buffered_step(
    algorithm: Algorithm,
    state: ServerState,
    buffer: Sequence[tuple[ClientResult, int]],
    *,
    staleness: Staleness,
    settings: LocalTraining,
    num_clients: int,
    seed: int,
) -> ServerState:
    """One FedBuff server step: the algorithm's pipeline over the buffered results, each
    ``(result, staleness)`` update scaled by ``staleness.weight(s)`` first."""
    scaled = [replace(r, update=r.update * staleness.weight(s)) for r, s in buffer]
    return server_update(
        algorithm, state, scaled, settings=settings, num_clients=num_clients, seed=seed
    )


def run_fedbuff(
    algorithm: Algorithm,
    executor: Executor,
    *,
    num_clients: int,
    params: torch.Tensor,
    buffers: torch.Tensor,
    clock: VirtualClock,
    fedbuff: FedBuff,
    steps: int,
    seed: int = 0,
    settings: LocalTraining | None = None,
    policy: UpdatePolicy | None = None,
    evaluate: Evaluate | None = None,
    eval_every: int = 1,
    callbacks: Sequence[Callback] = (),
    on_client_error: OnClientError = "skip",
) -> History:
    """Run FedBuff until the server has applied ``steps`` steps; one report per step.

    Each report's metrics hold ``sim_time_s`` (when the step was applied),
    ``staleness_mean`` and ``staleness_max`` of its K updates, the training metrics, the
    failures, rejections and bytes since the step before, and the evaluation; its
    ``clients`` hold each buffered update's ``client_id``, ``version`` (pulled),
    ``staleness`` and ``finish_s``, in arrival order.

    Client ``k``'s ``j``-th pull of version ``v`` trains with the seed
    ``derive_seed(seed, "client", v, k)`` (``j = 0``, the seed a synchronous round ``v``
    gives it) or ``derive_seed(seed, "client", v, k, j)``.
    """
    on_client_error = check_on_client_error(on_client_error)
    if algorithm.personal_model is not None or algorithm.aggregation.every_round:
        raise FedloomError(
            f"{algorithm.name} cannot run asynchronously: its aggregation assumes synchronous "
            "rounds (a personal pass, or a privacy accountant over sampled cohorts)"
        )
    if len(clock.profiles) < num_clients:
        raise FedloomError(
            f"the clock has {len(clock.profiles)} client profiles, the population {num_clients}"
        )
    settings = settings or LocalTraining()
    policy = policy or UpdatePolicy()
    slots = min(fedbuff.concurrency, num_clients)
    state = server_init(algorithm, params, buffers)
    size = float((state.params.numel() + state.buffers.numel()) * BYTES_PER_VALUE)
    for callback in callbacks:
        callback.on_start(steps, state)
    queue: list[tuple[float, int, _Job]] = []
    busy: set[int] = set()
    pulls: dict[tuple[int, int], int] = {}
    seq = 0
    launches = 0
    consecutive_failures = 0
    since = _Tally()
    buffer: list[tuple[ClientResult, int, _Job]] = []
    reports: list[RoundReport] = []

    def launch(now: float) -> None:
        nonlocal seq, launches
        idle = [  # a client that is never online again is not asked
            k
            for k in range(num_clients)
            if k not in busy and clock.profile(k).online_window(now) is not None
        ]
        count = min(slots - len(busy), len(idle))
        if count <= 0:
            return
        rng = numpy_rng(seed, "fedbuff", launches)
        launches += 1
        chosen = sorted(int(k) for k in rng.choice(idle, size=count, replace=False))
        version = state.round
        plans = []
        for k in chosen:
            j = pulls.get((k, version), 0)
            pulls[(k, version)] = j + 1
            keys = (version, k) if j == 0 else (version, k, j)
            plans.append(ClientPlan(k, version, derive_seed(seed, "client", *keys)))
        if not getattr(executor, "clients_hold_state", False):
            plans = prepare_plans(algorithm, state, plans)
        shared = algorithm.state.shared(state.algorithm) if algorithm.state is not None else {}
        context = LocalContext(global_params=state.params, extras=shared)
        starts = {p.client_id: state.buffers for p in plans}
        outcomes = executor.fit(plans, state.params, starts, context)
        since.bytes_down += size * len(plans)
        for plan, outcome in zip(plans, outcomes, strict=True):
            examples = outcome.num_example_passes if isinstance(outcome, ClientResult) else 0
            timing = client_timing(
                clock.profile(plan.client_id),
                client_id=plan.client_id,
                start_s=now,
                examples=examples,
                down_bytes=size,
                up_bytes=size if isinstance(outcome, ClientResult) else 0.0,
            )
            job = _Job(seq, plan, version, outcome, timing)
            heapq.heappush(queue, (timing.end_s, seq, job))
            busy.add(plan.client_id)
            seq += 1

    launch(0.0)
    while state.round < steps:
        if not queue:
            raise FedloomError("FedBuff has no client left to train (none is ever online)")
        now = queue[0][0]
        if math.isinf(now):
            raise FedloomError("FedBuff has no client left to train (none is online again)")
        while queue and queue[0][0] == now and state.round < steps:
            job = heapq.heappop(queue)[2]
            busy.discard(job.plan.client_id)
            failure = _failure(job)
            if failure is not None:
                since.failures += 1
                consecutive_failures += 1
                judge_failures(
                    [failure], round_number=state.round + 1, on_client_error=on_client_error
                )
                if consecutive_failures > 10 * num_clients:
                    raise FedloomError(
                        f"FedBuff: the last {consecutive_failures} client jobs all failed "
                        f"(the last: {failure.reason}); stopping"
                    )
                continue
            consecutive_failures = 0
            assert isinstance(job.outcome, ClientResult)
            since.bytes_up += size
            valid, rejections = validate_updates(
                [job.outcome],
                num_params=state.params.numel(),
                num_buffers=state.buffers.numel(),
                policy=policy,
            )
            for rejection in rejections:
                since.rejected += 1
                log.warning(
                    "version %d: rejected the update of client %d: %s",
                    state.round,
                    rejection.client_id,
                    rejection.reason,
                )
            if not valid:
                continue
            buffer.append((valid[0], state.round - job.version, job))
            if len(buffer) < fedbuff.buffer_size:
                continue
            results = [r for r, _, _ in buffer]
            state = buffered_step(
                algorithm,
                state,
                [(r, s) for r, s, _ in buffer],
                staleness=fedbuff.staleness,
                settings=settings,
                num_clients=num_clients,
                seed=seed,
            )
            stale = [float(s) for _, s, _ in buffer]
            metrics = {
                "sim_time_s": now,
                "num_results": float(len(buffer)),
                "num_failures": float(since.failures),
                "num_rejected": float(since.rejected),
                "staleness_mean": sum(stale) / len(stale),
                "staleness_max": max(stale),
                "bytes_down": since.bytes_down,
                "bytes_up": since.bytes_up,
                **_train_metrics(results),
                **pipeline_metrics(algorithm, state),
            }
            if evaluate is not None and (state.round % eval_every == 0 or state.round == steps):
                metrics.update(evaluate(state, {}))
            clients = {
                "client_id": tuple(float(j.plan.client_id) for _, _, j in buffer),
                "version": tuple(float(j.version) for _, _, j in buffer),
                "staleness": tuple(stale),
                "finish_s": tuple(j.timing.finish_s for _, _, j in buffer),
            }
            report = RoundReport(round=state.round, metrics=metrics, clients=clients)
            reports.append(report)
            notify_round(callbacks, report, state)
            buffer, since = [], _Tally()
            if any(callback.stop_requested for callback in callbacks):
                steps = state.round
        if state.round < steps:
            launch(now)
    history = History(tuple(reports), state)
    for callback in callbacks:
        callback.on_end(history)
    return history


@dataclass
class _Tally:
    """What happened between two server steps (local to one run, never shared)."""

    failures: int = 0
    rejected: int = 0
    bytes_down: float = 0.0
    bytes_up: float = 0.0


def _failure(job: _Job) -> ClientFailure | None:
    if isinstance(job.outcome, ClientFailure):
        return job.outcome
    if job.timing.completed:
        return None
    when = "never came online again" if math.isinf(job.timing.begin_s) else "went offline"
    return ClientFailure(
        job.plan.client_id, f"{when} before finishing (virtual clock)", round=job.version
    )
