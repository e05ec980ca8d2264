"""``fedloom server`` and ``fedloom client``: a run config, deployed.

The server builds the algorithm, the initial model and the evaluation from the same
:class:`~fedloom.config.RunConfig` as a simulation, and runs the same round loop with a
:class:`~fedloom.net.server.NetworkExecutor`. The config's ``deploy`` section says how it
is served (address, TLS, deadlines, ``min_fit_clients``). With a run directory the server
writes ``metrics.jsonl``, a checkpoint after every round, and at the end the model and a
summary; started again with the same command after a crash, it continues from the last
completed round.

A demo client builds the same federated dataset and trains on its own share (``index``);
real clients bring their own data through a data hook (:func:`load_data_hook`) or call
:func:`fedloom.net.client.run_client` with their tensors.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import torch
from rich.console import Console

from fedloom.algorithms.personal_client import personal_parts
from fedloom.config import (
    NUM_CLASSES,
    DeployConfig,
    RunConfig,
    build_client_store,
    build_federated,
    build_model,
    build_policy,
    build_run,
    build_task,
)
from fedloom.config.server import protections
from fedloom.config.spec import stopping_callbacks, tracking_callbacks
from fedloom.data import Dataset
from fedloom.engine import Callback, Checkpoints, Evaluator, History, run_rounds
from fedloom.engine.early import stopping_summary
from fedloom.engine.validation import UpdatePolicy
from fedloom.errors import ConfigError, FedloomError
from fedloom.net.board import Access, RoundBoard
from fedloom.net.client import run_client
from fedloom.net.server import NetworkExecutor, start_server
from fedloom.net.status import StatusLine
from fedloom.params import flatten_buffers, flatten_params
from fedloom.report import MetricsFiles, save_model

if TYPE_CHECKING:
    from fedloom.net.dashboard import Dashboard
    from fedloom.net.secagg_executor import SecureNetworkExecutor

__all__ = ["deploy_access", "load_data_hook", "run_demo_client", "serve", "server_credentials_for"]

log = logging.getLogger("fedloom.server")


def deploy_access(deploy: DeployConfig, num_clients: int) -> Access:
    """Who may take part: the configured client ids (or client-0..K-1) and their tokens."""
    clients = tuple(deploy.clients or (f"client-{k}" for k in range(num_clients)))
    if len(clients) != num_clients:
        raise ConfigError(
            f"deploy.clients: {len(clients)} ids given, but the data has {num_clients} clients"
        )
    tokens: dict[str, str] = {}
    if deploy.tokens:
        import yaml

        mapping = yaml.safe_load(Path(deploy.tokens).read_text()) or {}
        if not isinstance(mapping, dict):
            raise ConfigError(f"deploy.tokens: {deploy.tokens} must map client ids to tokens")
        tokens = {str(token): str(client) for client, token in mapping.items()}
    return Access(clients, tokens, trust_claimed_ids=deploy.insecure)


def server_credentials_for(deploy: DeployConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``deploy.certs`` (client certificates required unless tokens
    authenticate); ``None`` only with ``deploy.insecure``."""
    from fedloom.net.tls import server_credentials

    if deploy.insecure:
        return None
    if not deploy.certs:
        raise ConfigError(
            "deploy.certs: TLS is on by default; pass --certs DIR (make one with `fedloom "
            "certs`), or deploy.insecure=true for a plaintext test setup"
        )
    folder = Path(deploy.certs)
    return server_credentials(
        folder / "server.pem",
        folder / "server.key",
        folder / "ca.pem",
        require_client_auth=not deploy.tokens,
    )


def serve(
    config: RunConfig,
    *,
    access: Access,
    credentials: grpc.ServerCredentials | None,
    address: str | None = None,
    run_dir: Path | None = None,
    callbacks: Sequence[Callback] = (),
    console: Console | None = None,
    on_listening: Callable[[int], None] | None = None,
    on_dashboard: Callable[[Dashboard], None] | None = None,
) -> History:
    """Run ``config`` with networked clients; returns the history when the run is over.

    With ``run_dir`` the run writes its metrics and a checkpoint there after every round,
    continues from that checkpoint when one exists, and saves the final model and summary.
    With ``deploy.dashboard`` set it also serves the live dashboard
    (:mod:`fedloom.net.dashboard`) and hands it to ``on_dashboard`` (its URL and token).
    Raises :class:`~fedloom.net.server.RoundStarved` when a round gets too few updates.
    """
    deploy = config.deploy
    if config.server.selection is not None and config.server.selection.name != "uniform":
        raise ConfigError(
            f"server.selection: {config.server.selection.name} runs in simulation only (its "
            "loss queries and simulated availability have no gRPC counterpart yet); use uniform"
        )
    if config.fedbuff is not None:
        raise ConfigError(
            "fedbuff: asynchronous FedBuff is not available over gRPC yet (issue 20); it runs "
            "in simulation on the virtual clock (fedloom run)"
        )
    if config.clock is not None:
        log.warning(
            "clock: simulated time is for simulation; the deployed server ignores it (its "
            "round deadline is deploy.round_timeout_s, in real seconds)"
        )
    if config.data.task_sequence is not None or config.algorithm.name == "lifelong":
        raise ConfigError(
            "data.task_sequence / algorithm: lifelong learning (task sequences, each client's "
            "EWC Fisher) runs in simulation only for now (fedloom run); deployed clients do not "
            "yet follow a task sequence or keep a Fisher in their own state"
        )
    spec = build_run(config)
    data, algorithm, module, settings = spec.data, spec.algorithm, spec.module, spec.local
    # kept by each client, never sent to the server (with local buffers, those too)
    personal = personal_parts(algorithm, local_buffers=config.model.buffers == "local")
    secure = None
    if config.server.secure_aggregation is not None:  # the clients mask, the server sums
        if personal:
            raise ConfigError(
                f"server.secure_aggregation: {algorithm.name} keeps personal parameters (or "
                "local buffers) on each client, which the deployed secure sum does not mask "
                "around yet; run it without secure aggregation, or in simulation (fedloom run)"
            )
        from fedloom.net.secagg_executor import secure_deployment  # loads cryptography

        secure = secure_deployment(algorithm)
        algorithm = secure.algorithm
    if personal and deploy.client_state != "client":
        raise ConfigError(
            f"deploy.client_state: {algorithm.name} keeps personal parameters on each client, "
            "and deployed they never leave it; set deploy.client_state: client"
        )
    if getattr(module, "mode", None) == "alternating":
        raise ConfigError(
            "task.mode: alternating updates run in simulation only (fedloom run: every "
            "engine); a deployed client trains one phase, so deploy with mode: reversal"
        )
    if len(access.clients) != data.num_clients:
        raise ConfigError(
            f"the config has {data.num_clients} clients but {len(access.clients)} client ids "
            "were given"
        )
    params, buffers = flatten_params(module), flatten_buffers(module)
    model_bytes = 4 * (params.numel() + buffers.numel())
    max_message = (
        int(deploy.max_message_mb * 2**20) if deploy.max_message_mb else 2 * model_bytes + 2**20
    )
    policy = build_policy(config.server, deployment=True)  # the relative checks are on
    enabled, warnings = protections(config.server, policy)
    if secure is not None:  # no update is visible to check: what protects the sum instead
        enabled = ["secure aggregation: the server sees only the cohort's masked sum; clients "
                   f"clip{' to ' + format(secure.clip_norm, 'g') if secure.clip_norm else ''} "
                   f"and quantize to [-{secure.config.clip_range:g}, "
                   f"{secure.config.clip_range:g}]"]  # fmt: skip
        warnings = []
    log.info("update protections: %s", "; ".join(enabled))
    for warning in warnings:
        log.warning("UNSAFE: %s", warning)
    board = RoundBoard(
        access,
        settings,
        max_tensor_bytes=model_bytes + 2**20,
        policy=policy,
        program=algorithm.client_program(),
        state=algorithm.state,
        clients_hold_state=deploy.client_state == "client",
        compress=deploy.compress,
        personal=personal,
    )
    services, room = [], None
    if secure is not None:
        from fedloom.net.secagg_room import SecAggRoom, secure_aggregation_service

        board.secure, room = True, SecAggRoom(access)
        services.append(secure_aggregation_service(room))
    server, port = start_server(
        board,
        address or deploy.address,
        credentials=credentials,
        max_message_bytes=max_message,
        services=services,
    )
    if on_listening is not None:
        on_listening(port)
    evaluator = Evaluator(module, data, task=spec.task)
    stopping = stopping_callbacks(config, module, run_dir)
    observers = [*callbacks, *stopping, *tracking_callbacks(config, module, run_dir)]
    checkpoint = None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
        checkpoint = Checkpoints(run_dir, fingerprint=config.fingerprint())
        observers.append(MetricsFiles(run_dir))
    status = StatusLine(board, console) if console is not None else None
    if status is not None:
        observers.append(status)
    dashboard = None
    if deploy.dashboard is not None:
        from fedloom.net.dashboard import DashboardFeed, read_token, start_dashboard

        feed = DashboardFeed(board)
        observers.append(feed)
        dashboard = start_dashboard(
            feed,
            host=deploy.dashboard_host,
            port=deploy.dashboard,
            token=read_token(deploy.dashboard_token),
            certs=deploy.certs,
        )
        if on_dashboard is not None:
            on_dashboard(dashboard)
    needed = max(deploy.min_fit_clients, policy.min_updates, algorithm.min_updates())
    executor: NetworkExecutor | SecureNetworkExecutor = NetworkExecutor(
        board,
        round_timeout_s=deploy.round_timeout_s,
        min_fit_clients=needed,
        retries=deploy.retries,
        close_early=deploy.close_early,
        join_timeout_s=deploy.join_timeout_s,
    )
    if secure is not None and room is not None:  # one decoded sum a round; t guards it
        from fedloom.net.secagg_executor import SecureNetworkExecutor

        needed, policy = 1, UpdatePolicy()  # no client's update is visible to validate
        executor = SecureNetworkExecutor(
            board, room, secure.config, seed=config.seed, weighting=secure.weighting,
            clip_norm=secure.clip_norm, round_timeout_s=deploy.round_timeout_s,
            phase_timeout_s=deploy.phase_timeout_s, join_timeout_s=deploy.join_timeout_s,
        )  # fmt: skip
    finished = False
    try:
        history = run_rounds(
            algorithm,
            executor,
            num_clients=data.num_clients,
            params=params,
            buffers=buffers,
            rounds=config.rounds,
            fraction=config.server.fraction,
            sampling=config.server.sampling,
            seed=config.seed,
            settings=settings,
            work=spec.work,
            policy=replace(policy, min_updates=needed),
            local_buffers=config.model.buffers == "local",
            evaluate=lambda state, _: evaluator.global_metrics(state.params, state.buffers),
            eval_every=config.eval.every,
            callbacks=observers,
            checkpoint=checkpoint,
            client_states=build_client_store(
                config.server, run_dir / "client-state" if run_dir is not None else None
            ),
            # whoever knows the run seed (it is in config.yaml) must not be able to
            # regenerate the DP noise: the server mixes in a secret it never writes down
            noise_secret=None if deploy.dp_noise == "reproducible" else secrets.randbits(62),
        )
        finished = True
    finally:
        if status is not None:
            status.close()
        if finished:
            board.finish()  # tell the clients the run is over (not when the server failed)
            board.wait_farewell(timeout_s=10.0)
        server.stop(grace=2.0)
        if dashboard is not None:
            dashboard.stop()
    if run_dir is not None:
        final = history.final_state
        if config.output.save_model:
            save_model(run_dir / "model.safetensors", module, final.params, final.buffers)
        records = history.records()
        summary: dict[str, float | str] = {**(records[-1] if records else {})}
        summary.update({"num_params": final.params.numel(), **stopping_summary(stopping)})
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return history


def load_data_hook(spec: str) -> dict[str, torch.Tensor]:
    """Call a user's data hook ``path/to/file.py:function`` (or ``package.module:function``).

    The function takes no arguments and returns the client's training split: ``(x, y)``
    (float inputs, one row per example, shaped as the model expects, and integer labels), or
    a mapping of named tensors with ``"x"``, ``"y"`` and any extra entries (masks ...), each
    with one row per example. Returns it as a named batch.
    """
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ConfigError(f"--data-hook {spec!r}: expected FILE.py:FUNCTION or MODULE:FUNCTION")
    if target.endswith(".py"):
        location = importlib.util.spec_from_file_location("fedloom_user_data", target)
        if location is None or location.loader is None or not Path(target).exists():
            raise ConfigError(f"--data-hook: cannot load {target}")
        module = importlib.util.module_from_spec(location)
        location.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"--data-hook: {target} has no function {name!r}")
    returned = function()
    if isinstance(returned, Mapping):
        batch = {str(key): torch.as_tensor(value) for key, value in returned.items()}
        if "x" not in batch or "y" not in batch:
            raise FedloomError(
                f"--data-hook {spec}: the mapping it returned has {sorted(batch)}; it needs "
                "'x' (inputs) and 'y' (labels), plus any extra entries"
            )
    else:
        x, y = returned
        batch = {"x": torch.as_tensor(x), "y": torch.as_tensor(y)}
    batch["x"] = batch["x"].to(torch.float32)
    batch["y"] = batch["y"].to(torch.int64)
    rows = batch["x"].shape[0] if batch["x"].ndim else 0
    if batch["y"].ndim != 1 or len(batch["y"]) != rows:
        raise FedloomError(
            f"--data-hook {spec}: x has {rows} rows but y has shape {tuple(batch['y'].shape)}; "
            "return (x, y) with one label per row"
        )
    uneven = [k for k, t in batch.items() if t.ndim == 0 or len(t) != rows]
    if uneven:
        raise FedloomError(
            f"--data-hook {spec}: entries {uneven} do not have one row per example ({rows})"
        )
    return batch


def run_demo_client(
    config: RunConfig,
    *,
    address: str,
    client_id: str,
    index: int | None,
    credentials: grpc.ChannelCredentials | None,
    token: str | None = None,
    data_hook: str | None = None,
    give_up_after_s: float = 600.0,
    delay_s: float = 0.0,
    state_path: str | Path | None = None,
) -> int:
    """Train as client ``index`` of the config's federated dataset, or on the data that
    ``data_hook`` returns; the config gives the model architecture. ``state_path`` keeps the
    client's own algorithm state (see :func:`~fedloom.net.client.run_client`)."""
    if (index is None) == (data_hook is None):
        raise ConfigError("give exactly one of --index (a demo share) and --data-hook")
    if data_hook is not None:
        batch = load_data_hook(data_hook)
        x, y = batch["x"], batch["y"]
        dataset = Dataset(  # only its shapes matter: it tells the model its input and output
            "own-data", x, y, x[:0], y[:0], num_classes=_hook_classes(config)
        )
    else:
        data = build_federated(config)
        if not 0 <= index < data.num_clients:  # type: ignore[operator]
            raise ConfigError(f"--index {index}: the config has {data.num_clients} clients")
        batch = data.client_batch(index)  # type: ignore[arg-type]
        dataset = data.dataset
    task = build_task(config, data if data_hook is None else dataset)
    torch.manual_seed(0)  # the template's own weights are never used; keep it deterministic
    module = build_model(config, dataset)()
    return run_client(
        address,
        client_id=client_id,
        data=batch,
        module=module,
        task=task,
        credentials=credentials,
        token=token,
        give_up_after_s=give_up_after_s,
        delay_s=delay_s,
        state_path=state_path,
    )


def _hook_classes(config: RunConfig) -> int:
    """How many classes the model of a client with its own data (``--data-hook``) outputs:
    what the config's data set has, which the client need not hold."""
    name = config.data.dataset
    if name == "emnist":
        from fedloom.data.vision import EMNIST_CLASSES

        return EMNIST_CLASSES[config.data.emnist.split]
    if name not in NUM_CLASSES:
        raise ConfigError(
            f"data.dataset: {name} takes its class count from its files, which a client with "
            "its own data (--data-hook) does not load; give the client a config whose "
            f"data.dataset has a fixed class count ({', '.join(NUM_CLASSES)}) and the same "
            "model, or run it as a demo share (--index)"
        )
    return NUM_CLASSES[name]
