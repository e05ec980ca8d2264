"""The Ray executor: the process engine's worker shares, as Ray actors on a cluster.

Each actor holds an in-process executor (vectorized where the model allows it) built once
from the model template and the clients' data. The data is put into Ray's object store once
and shared by every actor on a node. Each round the cohort is dealt to the actors, longest
clients first (:func:`fedloom.sim.process.balance`). A simulation thereby outgrows one machine
on an existing Ray cluster.

Connect to a running cluster with ``address="ray://..."`` or ``"auto"``. With no address and
no Ray session yet, a local instance is started bound to 127.0.0.1 and shut down by
:meth:`RayExecutor.close`. Ray serializes with pickle between the driver and its own
workers, so run it only on a cluster you control.

A client whose training raises is a failure inside its actor (:mod:`fedloom.sim.isolation`).
An actor that dies mid-round (its worker process killed, its node lost) costs its share of
the cohort: those clients come back as failures, and a new actor takes its place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedloom.client import ClientProgram, LocalContext, LocalTraining
from fedloom.data import FederatedDataset
from fedloom.errors import FedloomError
from fedloom.sim.isolation import engine_name, error_summary
from fedloom.sim.process import Share, gather_results, split_cohort
from fedloom.tasks import Task
from fedloom.types import ClientFailure, ClientPlan, ClientResult

if TYPE_CHECKING:
    from fedloom.sim import Engine

__all__ = ["RayExecutor"]

log = logging.getLogger("fedloom")


def _import_ray() -> Any:
    # Set before Ray is first imported, or a local instance may advertise the host's address
    # instead of 127.0.0.1 (some of its servers read it at import).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise FedloomError(
            "the ray engine needs Ray: pip install 'fedloom[ray]' (or pip install ray)"
        ) from None
    return ray


class _Worker:
    """A Ray actor: one in-process executor, built once, trains the shares it is sent."""

    def __init__(
        self,
        module: nn.Module,
        data: FederatedDataset,
        settings: LocalTraining,
        program: ClientProgram | None,
        task: Task | None,
        inner: Engine,
        threads: int,
    ):
        from fedloom.sim import make_executor

        torch.set_num_threads(threads)
        self.executor = make_executor(inner, module, data, settings, program=program, task=task)

    def engine(self) -> str:
        return engine_name(self.executor)

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        return self.executor.fit(plans, params, buffers, context)


class RayExecutor:
    """Train a cohort on Ray actors; results equal the in-process engines'.

    Args:
        module, data, settings, program, task: as for the other executors (terms and
            task functions must be picklable).
        num_workers: actors (default: the cluster's CPUs).
        inner: the engine each actor runs (``auto`` = vectorized where possible).
        address: a Ray cluster to join; ``None`` joins the current session or starts a
            local one on 127.0.0.1.
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
        inner: Engine = "auto",
        address: str | None = None,
    ):
        ray = _import_ray()
        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            if address is None:
                ray.init(
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    log_to_driver=False,
                )
            else:
                ray.init(address=address, log_to_driver=False)
            self._started_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.num_workers = max(1, num_workers or cpus)
        self._client_sizes = data.client_sizes
        threads = max(1, cpus // self.num_workers)
        self._actor_class = ray.remote(num_cpus=min(threads, cpus))(_Worker)
        data_ref = ray.put(data)  # once, shared by the actors of a node
        self._actor_args = (module, data_ref, settings, program, task, inner, threads)
        self._actors = [
            self._actor_class.remote(*self._actor_args) for _ in range(self.num_workers)
        ]
        self.inner_engines = self._get([a.engine.remote() for a in self._actors], "start-up")

    def _get(self, futures: list[Any], stage: str) -> list[Any]:
        try:
            return list(self._ray.get(futures))
        except self._ray.exceptions.RayError as exc:
            raise FedloomError(f"a Ray worker failed during {stage}: {exc}") from None

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        shares = split_cohort(plans, buffers, self._client_sizes, self.num_workers)
        params_ref = self._ray.put(params)  # once for all actors
        futures = [
            self._actors[share.worker].fit.remote(share.plans, params_ref, share.buffers, context)
            for share in shares
        ]
        trained = [
            self._share_outcome(share, future)
            for share, future in zip(shares, futures, strict=True)
        ]
        return gather_results(len(plans), shares, trained)

    def _share_outcome(self, share: Share, future: Any) -> list[ClientResult | ClientFailure]:
        """The share's results; failures for all its clients if its actor died (replaced)."""
        exceptions = self._ray.exceptions
        try:
            return list(self._ray.get(future))
        except exceptions.RayActorError as exc:  # the actor died; a raise is a RayTaskError
            reason = f"Ray worker {share.worker} died ({error_summary(exc)})"
        except exceptions.RayError as exc:
            raise FedloomError(f"a Ray worker failed during training: {exc}") from None
        log.warning("%s; starting a new one", reason)
        self._ray.kill(self._actors[share.worker])
        self._actors[share.worker] = self._actor_class.remote(*self._actor_args)
        self._get([self._actors[share.worker].engine.remote()], "the restart of a worker")
        return [ClientFailure(p.client_id, reason, round=p.round) for p in share.plans]

    def close(self) -> None:
        """Stop the actors, and the local Ray instance if this executor started it."""
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._started_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
