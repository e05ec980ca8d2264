"""The executor of a deployed server under secure aggregation (issue 15, the gRPC slice).

Each round, :class:`SecureNetworkExecutor.fit`:

1. opens the round on the :class:`~fedloom.net.board.RoundBoard` in secure mode: the selected
   clients get a ``secure_train`` task (the same model, program and seed as a plain one) and
   the board refuses plain updates;
2. opens a :class:`~fedloom.net.secagg_room.SecAggRoom` with the protocol's server state for
   the cohort, and paces its four phases (Bonawitz et al. 2017; SecAgg+ neighbor graphs):
   advertise keys (the deadline covers local training, as a plain round's does), share
   keys, masked input, unmasking. A phase closes when every client that should send has
   sent, or at ``phase_timeout_s``; who has not sent by then has dropped out;
3. returns one :class:`~fedloom.types.ClientResult` for the whole cohort, with client id
   :data:`~fedloom.privacy.secagg.decoded.COHORT_SUM_ID`: the survivors' decoded sum of
   ``w_k clip(u_k)`` as the update and ``W = sum_k w_k`` as the example count, which
   :class:`~fedloom.privacy.secagg.decoded.DecodedSum` turns into the step; and a
   :class:`~fedloom.types.ClientFailure` for every client whose input is not in the sum.

Dropouts: clients that vanish after any phase (crashed, killed, disconnected), up to
``n - t`` of them, cost nothing but the wait: the server reconstructs the dropped clients'
pairwise masks (or, for a client that dropped after its masked input, its self-mask, and its
input stays in the sum). With more, :class:`~fedloom.privacy.secagg.SecAggAborted`: the round
is logged with the reason, the clients still waiting are told, no result is returned, and the
round loop skips the round with the model unchanged (``round_skipped``; ``secagg_aborted``)
and goes on with the next one. The plain executor's ``min_fit_clients``, ``retries`` and
``close_early`` do not apply: the protocol's threshold decides whether a round counts.

What the server cannot check: no client's update is visible, so the update validation of a
plain deployment (norm bounds, the example count against the one announced at join) does not
apply; a client's weight is bounded only by the protocol's ``max_count``. Clipping happens on
the clients; central DP noise (DP-FedAvg) is added to the decoded sum as in simulation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fedloom.aggregate import ByExamples, Clip, Uniform
from fedloom.algorithms import Algorithm
from fedloom.client import LocalContext
from fedloom.errors import ConfigError
from fedloom.net.board import RoundBoard
from fedloom.net.proto import secagg_pb2 as spb
from fedloom.net.secagg_room import SecAggRoom
from fedloom.net.server import start_buffers
from fedloom.privacy.secagg import Phase, SecAggAborted, SecAggConfig, SecAggResult, SecAggServer
from fedloom.privacy.secagg.decoded import COHORT_SUM_ID, WEIGHTINGS, DecodedSum
from fedloom.privacy.secagg.stage import SecureSum
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["SecureDeployment", "SecureNetworkExecutor", "secure_deployment"]

log = logging.getLogger("fedloom.server")


@dataclass(frozen=True)
class SecureDeployment:
    """What a deployed secure run needs beyond the plain one: the algorithm whose reducer
    takes the decoded sum (:class:`~fedloom.privacy.secagg.decoded.DecodedSum`, per-client
    stages moved to the clients), the protocol's settings, and how each client turns its
    update into its input."""

    algorithm: Algorithm
    config: SecAggConfig
    weighting: str
    clip_norm: float | None


def secure_deployment(algorithm: Algorithm) -> SecureDeployment:
    """The deployed form of an algorithm built with ``server.secure_aggregation`` (its
    reducer a :class:`~fedloom.privacy.secagg.stage.SecureSum`, whose checks already ran):
    the clients clip (the pipeline's :class:`~fedloom.aggregate.Clip` stages, the tightest
    bound) and weight their own updates; the server reduces the decoded sum."""
    pipeline = algorithm.aggregation
    reducer = pipeline.reduce
    if not isinstance(reducer, SecureSum):
        raise ConfigError(f"server.secure_aggregation: {algorithm.name} does not reduce securely")
    if reducer.dropout_fraction:
        raise ConfigError(
            "server.secure_aggregation.dropout: simulated dropouts are for simulation; a "
            "deployment has real ones (remove the dropout section)"
        )
    if isinstance(pipeline.weighting, ByExamples):
        weighting = "examples"
    elif isinstance(pipeline.weighting, Uniform):
        weighting = "uniform"
    else:
        raise ConfigError(
            f"server.weighting: {pipeline.weighting.name} cannot be computed by the clients; "
            "secure aggregation over gRPC weights by examples or uniformly"
        )
    norms = [stage.max_norm for stage in pipeline.per_client if isinstance(stage, Clip)]
    if len(norms) != len(pipeline.per_client):
        raise ConfigError("server.secure_aggregation: only clipping runs on the clients")
    deployed = algorithm.with_aggregation(per_client=(), reduce=DecodedSum(mean=reducer.mean))
    return SecureDeployment(deployed, reducer.config, weighting, min(norms) if norms else None)


class SecureNetworkExecutor:
    """The :class:`~fedloom.engine.Executor` of a secure deployed run (see the module doc).

    ``seed`` is the run seed (the neighbor graph and the clients' rounding streams derive from
    it, as in simulation); ``weighting`` (``"examples"`` or ``"uniform"``) and ``clip_norm``
    (``None``: none) say how each client turns its update into its input.
    """

    clients_hold_state = False  # secure aggregation refuses algorithms with client state

    def __init__(
        self,
        board: RoundBoard,
        room: SecAggRoom,
        config: SecAggConfig,
        *,
        seed: int,
        weighting: str,
        clip_norm: float | None = None,
        round_timeout_s: float = 60.0,
        phase_timeout_s: float | None = None,
        join_timeout_s: float = 300.0,
    ):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.board, self.room, self.config = board, room, config
        self.seed, self.weighting, self.clip_norm = seed, weighting, clip_norm
        self.round_timeout_s = round_timeout_s
        self.phase_timeout_s = phase_timeout_s or round_timeout_s
        self.join_timeout_s = join_timeout_s
        self._metrics: dict[str, float] = {}
        self.last_result: SecAggResult | None = None

    def round_metrics(self) -> dict[str, float]:
        """The board's traffic for the training tasks plus the protocol's numbers
        (``secagg_*``: clients in the sum, dropped, bytes per client each way, refusals,
        whether the round aborted)."""
        return {**self.board.last_traffic, **self._metrics}

    def _params(
        self, index: int, plan: ClientPlan, cohort: list[int], num_params: int
    ) -> spb.RoundParams:
        c = self.config
        return spb.RoundParams(
            round=plan.round, seed=self.seed, client_index=index, cohort=cohort,
            num_params=num_params, threshold=c.threshold or 0, bits=c.bits,
            clip_range=c.clip_range, neighbors=c.neighbors or 0, value_bits=c.value_bits or 0,
            weighting=self.weighting, clip_norm=self.clip_norm or 0.0,
        )  # fmt: skip

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        global_buffers, own = start_buffers(buffers)
        round_, number = plans[0].round, plans[0].round + 1
        cohort = sorted(p.client_id for p in plans)
        server = SecAggServer.start(
            self.config, seed=self.seed, round=round_, cohort_ids=cohort, num_params=params.numel()
        )
        self.room.open(
            server,
            {p.client_id: self._params(p.client_id, p, cohort, params.numel()) for p in plans},
        )
        self.board.open(plans, params, global_buffers, context.extras, own_buffers=own)
        self.board.wait_joined(cohort, time.monotonic() + self.join_timeout_s)
        result, reason, phase, arrived = None, None, Phase.ADVERTISE, set()
        try:
            timeout = self.round_timeout_s  # the first phase includes local training
            while True:
                arrived = self.room.wait_phase(time.monotonic() + timeout)
                missing = self.room.expected() - arrived
                if missing:
                    names = [self.board.access.clients[c] for c in sorted(missing)]
                    log.info("round %d: secure aggregation phase %s closed without %s",
                             number, phase.value, ", ".join(names))  # fmt: skip
                if phase is Phase.UNMASK:
                    result = self.room.finish()
                    break
                phase, timeout = self.room.advance(), self.phase_timeout_s
        except SecAggAborted as exc:
            reason = exc.reason
            self.room.abort(f"secure aggregation of round {number} aborted: {reason}")
            log.warning("round %d: secure aggregation aborted in phase %s: %s; the round is "
                        "skipped and the model is unchanged", number, exc.phase, reason)  # fmt: skip
        finally:
            self.board.close()
            cost = self.room.close()
        self.last_result = result
        in_sum = set(result.survivor_ids) if result is not None else set()
        self._metrics = {  # dropped: stopped before the end (in the sum or not), as simulated
            **cost,
            "secagg_in_sum": float(len(in_sum)),
            "secagg_dropped": float(len(cohort) - len(arrived)),
            "secagg_aborted": float(result is None),
        }
        outcomes: list[ClientResult | ClientFailure] = []
        if result is not None:
            log.info("round %d: secure aggregation summed %d of %d clients' inputs (total weight "
                     "%d)", number, len(in_sum), len(cohort), result.num_examples)  # fmt: skip
            outcomes.append(
                ClientResult(
                    client_id=COHORT_SUM_ID,
                    update=torch.from_numpy(result.sum).to(torch.float32),
                    buffers=global_buffers,
                    num_examples=int(result.num_examples),
                    num_steps=1,
                    num_example_passes=0,
                    train_loss=0.0,
                )
            )
        why = (
            f"secure aggregation aborted: {reason}"
            if reason
            else "dropped out of secure aggregation"
        )
        outcomes += [ClientFailure(c, why, round=round_) for c in cohort if c not in in_sum]
        return outcomes
