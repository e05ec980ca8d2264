"""``fedloom server`` and ``fedloom client``: a run config, deployed.

The server builds the algorithm, the initial model and the evaluation from the same
:class:`~fedloom.config.RunConfig` as a simulation, and runs the same round loop with a
:class:`~fedloom.net.server.NetworkExecutor`. A demo client builds the same federated
dataset and trains on its own share (``--index``); real clients pass their own tensors to
:func:`fedloom.net.client.run_client`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import torch

from fedloom.config import (
    RunConfig,
    build_algorithm,
    build_federated,
    build_local_training,
    build_local_work,
    build_model,
    build_policy,
)
from fedloom.engine import Callback, Evaluator, History, run_rounds
from fedloom.net.client import run_client
from fedloom.net.server import Access, NetworkExecutor, RoundBoard, start_server
from fedloom.params import flatten_buffers, flatten_params
from fedloom.simulation import initial_module

__all__ = ["run_demo_client", "serve"]


def serve(
    config: RunConfig,
    *,
    address: str,
    access: Access,
    credentials: grpc.ServerCredentials | None,
    round_timeout_s: float = 60.0,
    callbacks: Sequence[Callback] = (),
    on_listening=None,
) -> History:
    """Run ``config`` with networked clients; returns the history when the run is over."""
    data = build_federated(config)
    if len(access.clients) != data.num_clients:
        raise ValueError(
            f"the config has {data.num_clients} clients but {len(access.clients)} client ids "
            "were given"
        )
    algorithm = build_algorithm(config, data.num_clients)
    module = initial_module(build_model(config, data.dataset), seed=config.seed)
    settings = algorithm.local_training(build_local_training(config.client))
    params, buffers = flatten_params(module), flatten_buffers(module)
    max_bytes = 4 * (params.numel() + buffers.numel()) + (1 << 20)
    board = RoundBoard(access, settings, max_tensor_bytes=max_bytes)
    server, port = start_server(
        board, address, credentials=credentials, max_message_bytes=2 * max_bytes
    )
    if on_listening is not None:
        on_listening(port)
    evaluator = Evaluator(module, data)
    try:
        return run_rounds(
            algorithm,
            NetworkExecutor(board, round_timeout_s=round_timeout_s),
            num_clients=data.num_clients,
            params=params,
            buffers=buffers,
            rounds=config.rounds,
            fraction=config.server.fraction,
            seed=config.seed,
            settings=settings,
            work=build_local_work(config.client),
            policy=build_policy(config.server),
            local_buffers=config.model.buffers == "local",
            evaluate=lambda state, _: evaluator.global_metrics(state.params, state.buffers),
            eval_every=config.eval.every,
            callbacks=callbacks,
        )
    finally:
        board.finish()
        board.wait_farewell(timeout_s=10.0)
        server.stop(grace=2.0)


def run_demo_client(
    config: RunConfig,
    *,
    address: str,
    client_id: str,
    index: int,
    credentials: grpc.ChannelCredentials | None,
    token: str | None = None,
    give_up_after_s: float = 600.0,
) -> int:
    """Train as client ``index`` of the config's federated dataset."""
    data = build_federated(config)
    algorithm = build_algorithm(config, data.num_clients)
    torch.manual_seed(0)  # the template's own weights are never used; keep it deterministic
    module = build_model(config, data.dataset)()
    x, y = data.client_data(index)
    return run_client(
        address,
        client_id=client_id,
        x=x,
        y=y,
        module=module,
        credentials=credentials,
        token=token,
        program=algorithm.client_program(),
        give_up_after_s=give_up_after_s,
    )
