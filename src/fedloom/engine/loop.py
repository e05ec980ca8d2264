"""The one round loop of fedloom.

Sample a cohort, ask the executor for results, judge failures, aggregate, evaluate, report.
Simulation and deployment differ only in the executor passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch

from fedloom.aggregate import RoundInfo
from fedloom.algorithms import (
    Algorithm,
    ServerState,
    pipeline_metrics,
    pipeline_stop_reason,
    prepare_plans,
    server_init,
    server_update,
)
from fedloom.algorithms.ditto import personal_plans
from fedloom.algorithms.ditto import personal_writes as ditto_writes
from fedloom.client import LocalContext, LocalTraining
from fedloom.client.store import ClientStates, with_writes
from fedloom.compress import Compression, compress_results
from fedloom.data import sample_cohort
from fedloom.data.sampling import SAMPLINGS, Sampling, cohort_size
from fedloom.data.selection import Selection
from fedloom.engine.callbacks import Callback, History, notify_round
from fedloom.engine.checkpoint import Checkpoints
from fedloom.engine.clock import VirtualClock, apply_clock
from fedloom.engine.executor import Executor
from fedloom.engine.failures import OnClientError, check_on_client_error, judge_failures
from fedloom.engine.validation import UpdatePolicy, validate_updates
from fedloom.engine.work import LocalWork, assign_work
from fedloom.errors import ConfigError, FedloomError, RoundAborted
from fedloom.rng import derive_seed
from fedloom.types import ClientFailure, ClientPlan, ClientResult, RoundReport

__all__ = ["Evaluate", "run_rounds"]

log = logging.getLogger("fedloom")

Evaluate = Callable[[ServerState, dict[int, torch.Tensor]], dict[str, float]]
"""``evaluate(state, client_buffers) -> metrics``."""

ClientLossQuery = Callable[[Sequence[int], torch.Tensor, torch.Tensor], Sequence[float]]
"""``losses(client_ids, params, buffers)``: each client's mean training loss on that model."""
AfterRound = Callable[[ServerState, int], Mapping[int, Mapping[str, torch.Tensor]]]
"""``(state after round t, t) -> writes`` into the client-state store (see ``after_round``)."""

BYTES_PER_VALUE = 4  # float32 on the wire


def plans_for_round(
    num_clients: int,
    fraction: float,
    *,
    seed: int,
    round: int,
    sampling: Sampling = "uniform",
) -> list[ClientPlan]:
    """The round's cohort as plans, each with its own derived seed (none, when a Poisson
    cohort is empty)."""
    cohort = sample_cohort(num_clients, fraction, seed=seed, round=round, sampling=sampling)
    return [
        ClientPlan(client_id=int(c), round=round, seed=derive_seed(seed, "client", round, int(c)))
        for c in cohort
    ]


def _select(
    selection: Selection,
    num_clients: int,
    fraction: float,
    *,
    seed: int,
    round: int,
    losses: ClientLossQuery | None,
    params: torch.Tensor,
    buffers: torch.Tensor,
    sizes: Mapping[int, int] | None,
    model_bytes: int,
) -> tuple[list[ClientPlan], dict[str, float]]:
    """The round's plans from a selection rule, and what selecting cost: each loss query
    sends a candidate the model and gets one float32 back."""
    if selection.needs_losses and losses is None:
        raise ValueError(f"the {selection.name} selection needs client_losses")
    query = None
    if losses is not None:
        query = lambda ids: losses(ids, params, buffers)  # noqa: E731
    counts = None
    if sizes is not None:
        counts = np.array([sizes.get(k, 0) for k in range(num_clients)], dtype=np.float64)
    chosen = selection.select(
        num_clients, fraction, seed=seed, round=round, losses=query, sizes=counts
    )
    metrics = dict(chosen.metrics)
    queries = metrics.get("selection_queries", 0.0)
    if queries:
        metrics["selection_bytes_down"] = queries * model_bytes
        metrics["selection_bytes_up"] = queries * BYTES_PER_VALUE
    plans = [
        ClientPlan(client_id=int(c), round=round, seed=derive_seed(seed, "client", round, int(c)))
        for c in chosen.client_ids
    ]
    return plans, metrics


def _train_metrics(results: Sequence[ClientResult]) -> dict[str, float]:
    passes = sum(r.num_example_passes for r in results)
    loss = sum(r.train_loss * r.num_example_passes for r in results) / max(passes, 1)
    return {
        "train_loss": float(loss),
        "examples_processed": float(passes),
        "num_local_steps": float(sum(r.num_steps for r in results)),
    }


def _per_client(results: Sequence[ClientResult]) -> dict[str, tuple[float, ...]]:
    """Per-client values of a round's valid results, for callbacks that want them."""
    return {
        "train_loss": tuple(r.train_loss for r in results),
        "update_norm": tuple(float(r.update.norm()) for r in results),
        "num_examples": tuple(float(r.num_examples) for r in results),
    }


def run_rounds(
    algorithm: Algorithm,
    executor: Executor,
    *,
    num_clients: int,
    params: torch.Tensor,
    buffers: torch.Tensor,
    rounds: int,
    fraction: float,
    sampling: Sampling = "uniform",
    seed: int = 0,
    settings: LocalTraining | None = None,
    work: LocalWork | None = None,
    policy: UpdatePolicy | None = None,
    known_examples: Mapping[int, int] | None = None,
    local_buffers: bool = False,
    evaluate: Evaluate | None = None,
    eval_every: int = 1,
    callbacks: Sequence[Callback] = (),
    checkpoint: Checkpoints | None = None,
    on_client_error: OnClientError = "skip",
    client_states: ClientStates | None = None,
    noise_secret: int | None = None,
    personal_executor: Executor | None = None,
    selection: Selection | None = None,
    client_losses: ClientLossQuery | None = None,
    clock: VirtualClock | None = None,
    after_round: AfterRound | None = None,
) -> History:
    """Run ``rounds`` rounds of ``algorithm`` and return the history.

    Args:
        algorithm: the algorithm value (local objective terms, aggregation pipeline).
        executor: trains each round's cohort.
        num_clients: K, the size of the population.
        params, buffers: the initial global model as flat vectors.
        rounds: number of rounds.
        fraction: C, the fraction of clients sampled per round.
        sampling: ``"uniform"``: exactly ``max(round(C K), 1)`` clients a round;
            ``"poisson"``: each client with probability ``q = C``, so a round's cohort
            varies in size and may be empty (see :mod:`fedloom.data.sampling`). The stages
            are told which ran (:class:`~fedloom.aggregate.RoundInfo`): DP-FedAvg's
            accountant depends on it.
        seed: the run seed; every random stream is derived from it.
        settings: the clients' local settings (the server side of q-FFL and SCAFFOLD reads
            the learning rate; heterogeneous work reads the unit of work).
        work: per-client local work and stragglers (systems heterogeneity).
        policy: update validation (see :mod:`fedloom.engine.validation`); every update is
            checked for shape, dtype and finiteness even without one.
        known_examples: each client's true example count, when the server knows it.
        local_buffers: keep float buffers (batch-norm statistics) on the clients instead of
            averaging them.
        evaluate: called after a round (every ``eval_every`` rounds and after the last).
        callbacks: observers of the run.
        checkpoint: where to save the state after every round; when it already holds a
            checkpoint of this run, the run continues from there (and ends with the same
            model as an uninterrupted run).
        on_client_error: what a failed client (an exception in its training, a dead worker)
            does: ``"skip"`` leaves it out of its round (counted in ``num_failures``),
            ``"abort"`` stops the run with a :class:`~fedloom.errors.ClientError` (see
            :mod:`fedloom.engine.failures`).
        client_states: the empty client-state store to start from (default in memory; a
            :class:`~fedloom.client.spill.SpilledClientStates` for large populations). A
            resumed run uses the store its checkpoint names.
        noise_secret: mixed into the DP noise streams (a deployed server draws it from the
            operating system, so the noise cannot be regenerated from the run seed); ``None``
            keeps the noise reproducible, as a simulation's.
        personal_executor: trains the clients' personal models (Ditto,
            ``algorithm.personal_model``): called after ``executor`` on the same cohort with
            the plans of :func:`fedloom.algorithms.ditto.personal_plans`; the new personal
            models go into the client-state store whatever the round's outcome. Not needed
            when the executor's clients keep their own state (``clients_hold_state``:
            deployed clients run their personal pass themselves).
        after_round: the clients' own work at the end of a round, ``(state, round) ->
            writes`` into the client-state store (lifelong learning's Fisher estimate when a
            task ends, ``fisher_at_task_ends`` in ``sim/task_sequence.py``); simulation
            only.
        selection: which clients a round asks (:mod:`fedloom.data.selection`; ``None``:
            ``sampling`` alone, uniform or Poisson); rules that read the clients' losses
            (power of choice) query ``client_losses`` on the model the clients receive, and
            weight candidates by ``known_examples`` when given.
        clock: simulated time (see :mod:`fedloom.engine.clock`): each round starts when the
            one before closed, each client's update arrives after its download, its actual
            local work and its upload; updates later than the clock's deadline (and clients
            that went offline) are failures judged by ``on_client_error``. Adds
            ``sim_time_s`` (when the round closed), ``sim_round_s``, ``num_deadline_misses``
            and ``num_offline`` to the metrics. ``None``: no simulated time.
    """
    on_client_error = check_on_client_error(on_client_error)
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    settings = settings or LocalTraining()
    work = work or LocalWork()
    policy = policy or UpdatePolicy()
    needed = max(policy.min_updates, algorithm.min_updates())
    # DP-FedAvg's aggregation runs every round, whatever arrived, an empty cohort included:
    # skipping a round for too few updates would make what is released depend on who took
    # part, which its accountant does not cover (Pipeline.every_round)
    every_round = algorithm.aggregation.every_round
    fixed = cohort_size(num_clients, fraction) if sampling == "uniform" else None
    rate = fraction if sampling == "poisson" else None
    state = server_init(algorithm, params, buffers, clients=client_states)
    client_buffers: dict[int, torch.Tensor] = {}
    reports: list[RoundReport] = []
    if checkpoint is not None and (resumed := checkpoint.load()) is not None:
        if (resumed.state.params.shape, resumed.state.buffers.shape) != (
            params.shape, buffers.shape
        ):  # fmt: skip
            raise FedloomError(
                f"the checkpoint {checkpoint.path} holds a model of {resumed.state.params.numel()} "
                f"parameters, this run's has {params.numel()}; delete it to start over"
            )
        state, client_buffers, reports = (
            resumed.state, dict(resumed.client_buffers), list(resumed.reports)
        )  # fmt: skip
        log.info("resuming after round %d from %s", len(reports), checkpoint.path)
    for callback in callbacks:
        callback.on_start(rounds, state)
        if reports:
            callback.on_resume(tuple(reports), state)
    # deployed clients that keep their own state (SCAFFOLD's c_k, personal values, Ditto's
    # v_k) compute their start points and personal passes themselves
    holds_state = bool(getattr(executor, "clients_hold_state", False))
    holds_buffers = bool(getattr(executor, "clients_hold_buffers", False))
    if holds_state and algorithm.client_extras:
        raise ConfigError(
            f"algorithm: {algorithm.name}'s clients read their own store entries "
            f"({', '.join(algorithm.client_extras)}), which deployed clients do not keep yet; "
            "run it in simulation (engine: sequential or vectorized)"
        )
    compression = algorithm.program.compression or Compression()
    # a deployed executor's clients compress (and decode the broadcast) on their own; in
    # simulation the loop does it on their behalf (fedloom.compress.feedback)
    on_wire = bool(getattr(executor, "compresses_on_wire", False))
    num_params, num_buffers = state.params.numel(), state.buffers.numel()
    wants_clients = any(getattr(callback, "wants_clients", False) for callback in callbacks)
    if any(callback.stop_requested for callback in callbacks):  # a resumed run that had stopped
        rounds = len(reports)
    for t in range(len(reports), rounds):
        upcoming = RoundInfo(seed=seed, round=t, num_clients=num_clients, cohort_size=fixed,
                             sampling=sampling, sampling_rate=rate)  # fmt: skip
        reason = pipeline_stop_reason(algorithm, state, upcoming)
        if reason is not None:  # e.g. a spent privacy budget: end here, model and all saved
            log.warning("stopping before round %d of %d: %s", t + 1, rounds, reason)
            break
        started = time.perf_counter()
        sent = state.params if on_wire else compression.broadcast(state.params)
        selection_metrics: dict[str, float] = {}
        if selection is None:
            sampled = plans_for_round(num_clients, fraction, seed=seed, round=t, sampling=sampling)
        else:
            sampled, selection_metrics = _select(
                selection, num_clients, fraction, seed=seed, round=t,
                losses=client_losses, params=sent, buffers=state.buffers, sizes=known_examples,
                model_bytes=compression.download_bytes(num_params) + num_buffers * BYTES_PER_VALUE,
            )  # fmt: skip
        plans, dropped = assign_work(sampled, work, settings, seed=seed)
        if not holds_state:
            plans = prepare_plans(algorithm, state, plans)  # else each client computes its own
        start_buffers = {p.client_id: client_buffers.get(p.client_id, state.buffers) for p in plans}
        shared = algorithm.state.shared(state.algorithm) if algorithm.state is not None else {}
        context = LocalContext(global_params=sent, extras=shared)
        outcomes = executor.fit(plans, sent, start_buffers, context) if plans else []
        personal_writes: dict[int, dict[str, torch.Tensor]] = {}
        if algorithm.personal_model is not None and plans and not holds_state:
            if personal_executor is None:
                raise ValueError(f"{algorithm.name} needs a personal_executor (its personal pass)")
            personal = personal_plans(state, plans, seed=seed)
            trained = personal_executor.fit(personal, state.params, start_buffers, context)
            personal_writes = ditto_writes(state.params, trained)
        returned = [o for o in outcomes if isinstance(o, ClientResult)]
        failures = [o for o in outcomes if isinstance(o, ClientFailure)]
        timed: dict[str, float] = {}
        if clock is not None:  # who arrives in (simulated) time, with the bytes actually sent
            start_s = reports[-1].metrics.get("sim_time_s", 0.0) if reports else 0.0
            buffer_bytes = num_buffers * BYTES_PER_VALUE
            returned, late, timing = apply_clock(
                clock,
                returned,
                start_s=start_s,
                down_bytes=float(compression.download_bytes(num_params) + buffer_bytes),
                up_bytes=float(compression.upload_bytes(num_params) + buffer_bytes),
            )
            failures += late
            timed = {
                "sim_time_s": timing.end_s,
                "sim_round_s": timing.end_s - timing.start_s,
                "num_deadline_misses": float(len(timing.missed)),
                "num_offline": float(len(timing.offline)),
            }
        upload_bytes = len(returned) * compression.upload_bytes(num_params)
        residuals: dict[int, dict[str, torch.Tensor]] = {}
        if compression.upload is not None and not on_wire:
            seeds = {p.client_id: p.seed for p in plans}
            returned, residuals, upload_bytes = compress_results(
                compression, returned, seeds, state.clients
            )
        judge_failures(failures, round_number=t + 1, on_client_error=on_client_error)
        results, rejections = validate_updates(
            returned,
            num_params=state.params.numel(),
            num_buffers=state.buffers.numel(),
            policy=policy,
            known_examples=known_examples,
        )
        for rejection in rejections:
            log.warning(
                "round %d: rejected the update of client %d: %s",
                t + 1,
                rejection.client_id,
                rejection.reason,
            )
        metrics: dict[str, float] = {
            "num_clients": float(len(sampled)),
            "num_results": float(len(results)),
            "num_failures": float(len(failures)),
            "num_rejected": float(len(rejections)),
            "num_stragglers_dropped": float(len(dropped)),
            "bytes_down": float(
                len(sampled)
                * (compression.download_bytes(num_params) + num_buffers * BYTES_PER_VALUE)
            ),
            "bytes_up": float(upload_bytes + len(returned) * num_buffers * BYTES_PER_VALUE),
            **timed,
        }
        metrics.update(selection_metrics)
        per_client = _per_client(results) if wants_clients else {}
        measured = getattr(executor, "round_metrics", None)
        if measured is not None and plans:
            metrics.update(measured())
        aborted = None
        if len(results) >= needed or every_round:
            try:
                state = server_update(
                    algorithm,
                    state,
                    results,
                    settings=settings,
                    num_clients=num_clients,
                    average_buffers=not local_buffers,
                    seed=seed,
                    cohort_size=fixed,
                    sampling=sampling,
                    sampling_rate=rate,
                    noise_secret=noise_secret,
                    personal_on_clients=holds_state,
                )
            except RoundAborted as exc:  # e.g. secure aggregation with too many dropouts
                aborted = exc.reason
        if (len(results) >= needed or every_round) and aborted is None:
            if results:
                metrics.update(_train_metrics(results))
            metrics.update(pipeline_metrics(algorithm, state))
            if local_buffers and not holds_buffers:  # else each client keeps its own
                client_buffers.update({r.client_id: r.buffers for r in results})
        elif aborted is not None:
            log.warning(
                "round %d: the aggregation was aborted (%s); the round is skipped and the "
                "model is unchanged",
                t + 1,
                aborted,
            )
            state = state.skipped()
            metrics["round_skipped"] = 1.0
            metrics["round_aborted"] = 1.0
        elif not sampled:
            log.warning(
                "round %d: no client was sampled (poisson sampling, q = %g); the round is "
                "skipped and the model is unchanged",
                t + 1,
                fraction,
            )
            state = state.skipped()
            metrics["round_skipped"] = 1.0
        else:
            log.warning(
                "round %d: %d valid updates, %d needed (%s); the round is skipped and the "
                "model is unchanged",
                t + 1,
                len(results),
                needed,
                f"{len(failures)} failed, {len(rejections)} rejected, {len(dropped)} dropped",
            )
            state = state.skipped()
            metrics["round_skipped"] = 1.0
        if personal_writes:
            state = replace(state, clients=with_writes(state.clients, personal_writes))
        kept = {r.client_id for r in results}  # a client keeps its residual once accepted
        residuals = {k: v for k, v in residuals.items() if k in kept}
        if residuals:
            state = replace(state, clients=with_writes(state.clients, residuals))
        if after_round is not None and (own_writes := after_round(state, t)):
            state = replace(state, clients=with_writes(state.clients, own_writes))
        if evaluate is not None and ((t + 1) % eval_every == 0 or t + 1 == rounds):
            metrics.update(evaluate(state, client_buffers))
        metrics["wall_s"] = time.perf_counter() - started
        report = RoundReport(round=t + 1, metrics=metrics, clients=per_client)
        reports.append(report)
        if checkpoint is not None:
            checkpoint.save(state, client_buffers, reports)
        notify_round(callbacks, report, state)
        if any(callback.stop_requested for callback in callbacks):
            log.info("round %d: a callback asked to stop", t + 1)
            break
    history = History(tuple(reports), state)
    for callback in callbacks:
        callback.on_end(history)
    return history
