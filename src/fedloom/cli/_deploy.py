"""``fedloom server``, ``fedloom client`` and ``fedloom certs``: a run over the network.

Building these parsers imports nothing heavy; gRPC, torch and cryptography load inside the
handlers, when a server or client actually starts or certificates are written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from fedloom.cli._config_args import (
    CONFIG_HELP,
    add_config_arguments,
    add_tracking_arguments,
    load_run_config,
    tracking_overrides,
)
from fedloom.errors import FedloomError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_deploy_commands"]


def add_deploy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``server``, ``client`` and ``certs``, each with its handler as ``handler``."""
    server = commands.add_parser(
        "server",
        help="run a config with networked clients (gRPC, TLS)",
        description="Serve a run config to networked clients: the same algorithm and round\n"
        "loop as `fedloom run`, with clients connecting over gRPC. TLS with client\n"
        "certificates by default (--certs DIR from `fedloom certs`); --tokens FILE (YAML\n"
        "client-id: token) authenticates by bearer tokens instead. The run directory gets\n"
        "metrics.jsonl and a checkpoint after every round; after a crash, the same command\n"
        "continues from the last completed round. Every option is also a config key\n"
        "(deploy.*), e.g. --set deploy.min_fit_clients=8 --set deploy.close_early=true.",
        epilog=CONFIG_HELP
        + "  Deploy keys: deploy.{address,certs,tokens,insecure,clients,round_timeout_s,\n"
        "        join_timeout_s,min_fit_clients,retries,close_early,compress,max_message_mb,\n"
        "        client_state,dp_noise,phase_timeout_s,dashboard,dashboard_host,\n"
        "        dashboard_token}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(server)
    server.add_argument("--address", help="host:port to listen on (default 127.0.0.1:8443)")
    server.add_argument("--certs", metavar="DIR", help="folder with server.pem, server.key, ca.pem")
    server.add_argument("--tokens", metavar="FILE", help="YAML mapping client id -> token")
    server.add_argument(
        "--insecure", action="store_true", help="plaintext, no authentication (tests only)"
    )
    server.add_argument(
        "--clients", metavar="ID,...", help="client ids in order (default client-0..K-1)"
    )
    server.add_argument(
        "--round-timeout", type=float, metavar="S", help="round deadline in seconds (default 60)"
    )
    server.add_argument(
        "--min-fit-clients",
        type=int,
        metavar="N",
        help="valid updates a round needs; fewer by the deadline: wait deploy.retries more "
        "deadlines (default 2), then stop with exit code 3 (default 1)",
    )
    server.add_argument(
        "--dashboard",
        type=int,
        metavar="PORT",
        help="serve a live dashboard (a web page) on PORT (0: a free one), on loopback unless "
        "deploy.dashboard_host says otherwise, behind a token printed at start "
        "(deploy.dashboard_token FILE for your own)",
    )
    server.add_argument(
        "--name", help="run name: the run directory (default <dataset>-<algo>-server)"
    )
    server.add_argument(
        "--runs-dir", metavar="DIR", help="where run directories go (default: runs)"
    )
    add_tracking_arguments(server)
    server.set_defaults(handler=_cmd_server)

    client = commands.add_parser(
        "client",
        help="take part in a run as a client",
        description="Connect to a fedloom server and train on this client's data: a share of "
        "the config's dataset (--index, for demos) or your own data (--data-hook FILE.py:FUNC, "
        "a function returning (x, y) tensors). The server's task says how to train; the "
        "config gives the model architecture. Connection problems are retried with backoff.",
    )
    add_config_arguments(client)
    client.add_argument("--server", required=True, metavar="HOST:PORT")
    client.add_argument("--client-id", required=True)
    client.add_argument("--index", type=int, help="which share of the config's dataset")
    client.add_argument(
        "--data-hook", metavar="FILE.py:FUNC", help="a function returning this client's (x, y)"
    )
    client.add_argument(
        "--certs", metavar="DIR", help="folder with ca.pem and client-<id>.pem/.key"
    )
    client.add_argument("--token", help="bearer token (with --certs for the CA only)")
    client.add_argument("--insecure", action="store_true", help="plaintext (tests only)")
    client.add_argument(
        "--give-up-after",
        type=float,
        default=600.0,
        metavar="S",
        help="stop after this long without a working connection (default 600)",
    )
    client.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="S",
        help="wait this long before each submission, like a slow device (demos)",
    )
    client.add_argument(
        "--state",
        metavar="FILE",
        help="where this client keeps its own algorithm state (SCAFFOLD's c_k) between rounds "
        "and restarts (default client-state-<id>.safetensors here; used only by algorithms "
        "with per-client state)",
    )
    client.set_defaults(handler=_cmd_client)

    certs = commands.add_parser(
        "certs",
        help="create a CA, a server certificate and client certificates (quick start)",
        description="Write ca.pem/ca.key, server.pem/server.key and client-<id>.pem/.key to "
        "--out, for TLS with client authentication. Keys are written with mode 0600.",
    )
    certs.add_argument("--out", required=True, metavar="DIR", help="output folder")
    certs.add_argument(
        "--clients", required=True, metavar="ID,ID,...", help="client ids (common names)"
    )
    certs.add_argument(
        "--hosts",
        default="127.0.0.1,localhost",
        metavar="HOST,...",
        help="IP addresses and DNS names the server certificate is valid for",
    )
    certs.set_defaults(handler=_cmd_certs)


def _cmd_server(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from fedloom.config import build_federated
    from fedloom.engine import Checkpoints
    from fedloom.net.deploy import deploy_access, serve, server_credentials_for
    from fedloom.net.server import RoundStarved
    from fedloom.report.rundir import check_runs_dir

    flags = {
        "address": args.address,
        "certs": args.certs,
        "tokens": args.tokens,
        "clients": f"[{args.clients}]" if args.clients else None,
        "round_timeout_s": args.round_timeout,
        "min_fit_clients": args.min_fit_clients,
        "dashboard": args.dashboard,
    }
    extra = [f"deploy.{key}={value}" for key, value in flags.items() if value is not None]
    if args.insecure:
        extra.append("deploy.insecure=true")
    if args.runs_dir:
        extra.append(f"output.runs_dir={args.runs_dir}")
    extra.extend(tracking_overrides(args))
    config = load_run_config(args, extra)
    check_runs_dir(config.output.runs_dir)  # one line now, not a traceback after the data
    data = build_federated(config)
    run_dir = Path(config.output.runs_dir) / (
        args.name or config.name or f"{config.data.dataset}-{config.algorithm.name}-server"
    )
    done = Checkpoints(run_dir, fingerprint=config.fingerprint()).load()
    if done is not None and len(done.reports) >= config.rounds:
        console.print(
            f"the run in {run_dir}/ is already complete ({len(done.reports)} rounds); give "
            "another --name (or delete that folder) to start a new one"
        )
        return 0
    if console.is_terminal:  # log lines print above the live status line, not through it
        from rich.logging import RichHandler

        root = logging.getLogger()
        root.handlers = [RichHandler(console=console, show_path=False, show_time=False)]
    logging.getLogger("fedloom.server").setLevel(logging.INFO)
    access = deploy_access(config.deploy, data.num_clients)
    try:
        history = serve(
            config,
            access=access,
            credentials=server_credentials_for(config.deploy),
            run_dir=run_dir,
            console=console,
            on_listening=lambda port: console.print(
                f"fedloom server: {config.algorithm.name}, {config.rounds} rounds, "
                f"{data.num_clients} clients; listening on port {port}; run directory {run_dir}"
            ),
            on_dashboard=lambda board: console.print(
                f"dashboard: {board.url} (token from {config.deploy.dashboard_token})"
                if config.deploy.dashboard_token
                else f"dashboard: {board.login_url}",
                soft_wrap=True,
            ),
        )
    except RoundStarved as exc:
        print(f"fedloom: stopped: {exc}", file=sys.stderr)
        return 3
    final = history.reports[-1].metrics if history.reports else {}
    accuracy = final.get("test_accuracy")
    console.print(
        f"run over: {len(history.reports)} rounds"
        + (f", test accuracy {accuracy:.4f}" if accuracy is not None else "")
        + f"; model, metrics and checkpoint in {run_dir}/"
    )
    return 0


def _cmd_client(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from fedloom.net.deploy import run_demo_client
    from fedloom.net.tls import channel_credentials

    config = load_run_config(args)
    credentials = None
    if not args.insecure:
        if not args.certs:
            raise FedloomError("TLS is on by default: pass --certs DIR (see `fedloom certs`)")
        folder = Path(args.certs)
        own = folder / f"client-{args.client_id}.pem"
        use_own = own.exists() and not args.token
        credentials = channel_credentials(
            folder / "ca.pem",
            own if use_own else None,
            folder / f"client-{args.client_id}.key" if use_own else None,
        )
    logging.getLogger("fedloom.client").setLevel(logging.INFO)
    rounds = run_demo_client(
        config,
        address=args.server,
        client_id=args.client_id,
        index=args.index,
        credentials=credentials,
        token=args.token,
        data_hook=args.data_hook,
        give_up_after_s=args.give_up_after,
        delay_s=args.delay,
        state_path=args.state or f"client-state-{args.client_id}.safetensors",
    )
    console.print(f"{args.client_id}: trained {rounds} rounds")
    return 0


def _cmd_certs(args: argparse.Namespace, console: Console) -> int:
    from fedloom.net.certs import write_quickstart

    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    try:
        written = write_quickstart(args.out, clients, hosts=hosts)
    except ValueError as exc:
        print(f"fedloom: error: {exc}", file=sys.stderr)
        return 2
    console.print(f"wrote {len(written)} files to {args.out}/ (keys with mode 0600)")
    return 0
