"""The process executor: a pool of worker processes, each training a share of the cohort.

Each worker receives the model template and the clients' data once, when the pool starts (not
once per round). Each round it receives the global parameters and its share of the cohort,
trains it with an in-process executor (vectorized where the model allows it, else
sequential), and returns the results. Shares are balanced by local work: clients are dealt
longest first to the least loaded worker. Every worker uses ``cores // workers`` threads, so
the pool does not oversubscribe the machine.

Workers are fresh interpreters (``python -m fedloom.sim._process_worker``), not forks.
Forking a process whose torch thread pools are running can deadlock, and multiprocessing's
``spawn`` re-imports the user's main script, which then needs an
``if __name__ == "__main__"`` guard. They connect back over a Unix socket with an HMAC
challenge on a random key, so only this process's own workers can exchange (pickled)
messages with it. Each worker reads the key from its stdin, a pipe from this process (see
:func:`_launch`), never from its environment or command line. Model classes must be
importable by the workers: ``torch.nn`` layers, fedloom's models, or classes in an importable
module (not in ``__main__``).

A client whose training raises is a failure inside its worker (:mod:`fedloom.sim.isolation`).
A worker process that dies mid-round (killed, out of memory, a crash in native code) costs
its share of the cohort: those clients come back as failures naming the worker and how it
ended, and a fresh worker takes its place before the next round.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, Listener
from typing import Any

import numpy as np
import torch
from torch import nn

from fedloom.client import ClientProgram, LocalContext, LocalTraining
from fedloom.data import FederatedDataset
from fedloom.errors import FedloomError
from fedloom.tasks import Task
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["ProcessExecutor", "Share", "balance", "gather_results", "split_cohort"]

log = logging.getLogger("fedloom")


def balance(work: Sequence[int], num_workers: int) -> list[list[int]]:
    """Positions of ``work`` dealt to workers, longest first to the least loaded (LPT).

    >>> balance([5, 1, 4, 2], 2)
    [[0, 1], [2, 3]]
    """
    loads = [0] * num_workers
    shares: list[list[int]] = [[] for _ in range(num_workers)]
    for position in sorted(range(len(work)), key=lambda i: -work[i]):
        worker = loads.index(min(loads))
        shares[worker].append(position)
        loads[worker] += work[position]
    return [sorted(share) for share in shares]


@dataclass(frozen=True)
class Share:
    """One worker's part of a cohort: plan positions, their plans and starting buffers."""

    worker: int
    positions: list[int]
    plans: list[ClientPlan]
    buffers: dict[int, torch.Tensor]


def split_cohort(
    plans: Sequence[ClientPlan],
    buffers: Mapping[int, torch.Tensor],
    client_sizes: np.ndarray,
    num_workers: int,
) -> list[Share]:
    """The non-empty, work-balanced shares of ``plans`` (see :func:`balance`)."""
    unknown = [p.client_id for p in plans if not 0 <= p.client_id < len(client_sizes)]
    if unknown:
        raise FedloomError(
            f"plans name clients {unknown[:10]} but the data has {len(client_sizes)}"
        )
    shares = balance([int(client_sizes[p.client_id]) for p in plans], num_workers)
    result = []
    for worker, positions in enumerate(shares):
        if positions:
            share_plans = [plans[i] for i in positions]
            share_buffers = {
                p.client_id: buffers[p.client_id] for p in share_plans if p.client_id in buffers
            }
            result.append(Share(worker, positions, share_plans, share_buffers))
    return result


def gather_results(
    num_plans: int,
    shares: Sequence[Share],
    trained: Sequence[Sequence[ClientResult | ClientFailure]],
) -> list[ClientResult | ClientFailure]:
    """The workers' results back in plan order; every plan must have one."""
    results: list[ClientResult | ClientFailure | None] = [None] * num_plans
    for share, share_results in zip(shares, trained, strict=True):
        for position, result in zip(share.positions, share_results, strict=True):
            results[position] = result
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise FedloomError(f"no worker returned results for plan positions {missing[:10]}")
    return [r for r in results if r is not None]


START_TIMEOUT_S = 120.0


def _launch(address: str, authkey: bytes, environment: Mapping[str, str]) -> subprocess.Popen:
    """A worker process for ``address``, given ``authkey`` down its stdin pipe.

    Not in its environment or arguments: ``/proc/PID/environ`` and ``cmdline`` are readable
    by every process of the same user for the worker's whole life, and the key lets whoever
    holds it exchange pickles (run code) with the pool. The pipe holds the key only until the
    worker reads it at start-up. A worker that dies before reading is no error here: the
    connection wait reports how it exited.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "fedloom.sim._process_worker", address],
        env=environment,
        stdin=subprocess.PIPE,
        bufsize=0,  # unbuffered: the key is written at once, close() does not flush
    )
    assert process.stdin is not None  # for the type checker: stdin=PIPE
    with contextlib.suppress(BrokenPipeError):  # 65 bytes fit the pipe: the write never waits
        process.stdin.write(authkey.hex().encode() + b"\n")
    process.stdin.close()
    return process


def _accept(
    listener: Listener, processes: Sequence[subprocess.Popen], *, timeout_s: float
) -> list[Connection]:
    """One connection per worker; fails fast if a worker exits before connecting."""
    accepted: list[Connection] = []
    failure: list[BaseException] = []

    def accept_all() -> None:
        try:
            for _ in processes:
                accepted.append(listener.accept())
        except BaseException as exc:  # surfaced below
            failure.append(exc)

    thread = threading.Thread(target=accept_all, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(timeout=0.1)
        exited = [p.returncode for p in processes if p.poll() is not None]
        if exited and thread.is_alive():
            for p in processes:
                p.kill()
            raise FedloomError(f"a worker process exited with code {exited[0]} while starting")
    if thread.is_alive() or failure:
        for p in processes:
            p.kill()
        reason = failure[0] if failure else f"no connection within {timeout_s:.0f} s"
        raise FedloomError(f"worker processes did not start: {reason}")
    return accepted


class _WorkerDied(FedloomError):
    """A worker's connection closed while the parent waited for it."""


def _receive(connection: Connection, stage: str) -> Any:
    """The payload of a worker's next message; raises if it failed or died."""
    try:
        status, payload = connection.recv()
    except (EOFError, OSError):
        raise _WorkerDied(f"a worker process died during {stage}; see its output above") from None
    if status == "error":
        raise FedloomError(f"a worker process failed during {stage}:\n{payload}")
    return payload


def _death(worker: int, process: subprocess.Popen) -> str:
    """How worker number ``worker`` ended: ``"worker process 1 died (signal 9, SIGKILL)"``."""
    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:  # its connection broke but it lives on: end it
        process.kill()
        code = process.wait()
    if code < 0:
        try:
            how = f"signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            how = f"signal {-code}"
    else:
        how = f"exit code {code}"
    return f"worker process {worker} died ({how})"


def _stop(processes: Sequence[subprocess.Popen], connections: Sequence[Connection]) -> None:
    """Ask workers to exit, wait for them (killing any that do not), close connections."""
    for connection in connections:
        with contextlib.suppress(BrokenPipeError, OSError):
            connection.send(None)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for connection in connections:
        connection.close()


class ProcessExecutor:
    """Train a cohort across worker processes; results equal the in-process engines'.

    Args:
        module: the model template.
        data: the clients' data (sent to each worker once).
        settings: local training.
        program: the algorithm's client program; its objective terms must be picklable
            (module-level classes or functions), since workers are separate interpreters.
        task: the loss and metrics (picklable too; default classification).
        num_workers: worker processes (default: one per core).
        inner: the engine each worker runs (``auto`` = vectorized where possible).

    Use as a context manager, or call :meth:`close`, to stop the workers.
    """

    def __init__(
        self,
        module: nn.Module,
        data: FederatedDataset,
        settings: LocalTraining,
        *,
        program: ClientProgram | None = None,
        task: Task | None = None,
        num_workers: int | None = None,
        inner: str = "auto",
    ):
        cores = os.cpu_count() or 1
        self.num_workers = max(1, num_workers or cores)
        self._client_sizes = data.client_sizes
        self._settings = settings
        self._setup = {
            "module": module,
            "data": data,
            "settings": settings,
            "program": program,
            "task": task,
            "inner": inner,
            "threads": max(1, cores // self.num_workers),
        }
        # The process authkey (random per interpreter) also authenticates torch's
        # shared-memory tensor transfers, so the workers adopt it rather than a second key.
        self._authkey = bytes(multiprocessing.current_process().authkey)
        self._processes: list[subprocess.Popen] = []
        self._connections: list[Connection] = []
        self._processes, self._connections, self.inner_engines = self._start(self.num_workers)

    def _start(self, count: int) -> tuple[list[subprocess.Popen], list[Connection], list[str]]:
        """``count`` new workers, connected and set up: processes, connections, engines."""
        authkey = self._authkey
        listener = Listener(family="AF_UNIX", authkey=authkey)
        environment = {
            **os.environ,
            # the workers import what this process can import (model factories, tests)
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        address = str(listener.address)
        processes = [_launch(address, authkey, environment) for _ in range(count)]
        try:
            connections = _accept(listener, processes, timeout_s=START_TIMEOUT_S)
        finally:
            listener.close()
        try:
            for connection in connections:
                connection.send(self._setup)
            ready = [_receive(c, "start-up") for c in connections]
        except BaseException:
            _stop(processes, connections)
            raise
        # Workers connect in any order: list the processes in the order of the connections.
        by_pid = {process.pid: process for process in processes}
        processes = [by_pid[r["pid"]] for r in ready]
        return processes, connections, [r["engine"] for r in ready]

    def _replace(self, worker: int, reason: str) -> None:
        """Start a new worker in place of ``worker``, which died (``reason``)."""
        log.warning("%s; starting a new one", reason)
        _stop([self._processes[worker]], [self._connections[worker]])
        try:
            processes, connections, _ = self._start(1)
        except BaseException:
            self.close()
            raise
        self._processes[worker], self._connections[worker] = processes[0], connections[0]

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        """Train the cohort's shares; a worker that dies costs its share, not the round.

        The clients of a worker that dies mid-round come back as failures ("worker process
        1 died (signal 9, SIGKILL)") and the worker is replaced before the next round. A
        worker that raises outside client training (a bug, not a client) stops the pool.
        """
        shares = split_cohort(plans, buffers, self._client_sizes, self.num_workers)
        for worker, process in enumerate(self._processes):
            if process.poll() is not None:  # died between rounds
                self._replace(worker, _death(worker, process))
        dead: dict[int, str] = {}
        for share in shares:
            try:
                self._connections[share.worker].send((share.plans, params, share.buffers, context))
            except OSError:  # broken pipe: it died after the check above
                dead[share.worker] = _death(share.worker, self._processes[share.worker])
        trained: list[list[ClientResult | ClientFailure]] = []
        for share in shares:
            if share.worker not in dead:
                stage = f"training of {len(share.plans)} clients"
                try:
                    trained.append(_receive(self._connections[share.worker], stage))
                    continue
                except _WorkerDied:
                    dead[share.worker] = _death(share.worker, self._processes[share.worker])
                except FedloomError:
                    self.close()
                    raise
            reason = dead[share.worker]
            trained.append([ClientFailure(p.client_id, reason, round=p.round) for p in share.plans])
        for worker, reason in dead.items():
            self._replace(worker, reason)
        return gather_results(len(plans), shares, trained)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        _stop(self._processes, self._connections)
        self._connections, self._processes = [], []

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
