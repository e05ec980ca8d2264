"""The ``fedloom`` command line: ``fedloom run``, ``fedloom study`` and ``fedloom data describe``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from fedloom import __version__
from fedloom.errors import ConfigError, FedloomError

__all__ = ["main"]

_CONFIG_HELP = """\
configuration:
  A run is described by a YAML config (see examples/). Every key has a default, so
  `fedloom run` alone runs FedAvg on scikit-learn's bundled digits, 20 clients with
  Dirichlet(0.5) label skew, 40 rounds. Override any key with --set, e.g.
    --set rounds=50 --set data.dataset=mnist --set data.partition=shards
    --set data.partition.shards_per_client=2 --set client.epochs=5 --set server.fraction=0.1
  Keys: name, seed, rounds, engine, workers,
        data.{dataset,root,num_clients,partition,holdout_fraction,synthetic},
        model.{name,buffers}, client.{epochs,steps,batch_size,lr,momentum,weight_decay,
        heterogeneity.{low,high},stragglers.{fraction,policy}},
        server.{fraction,lr,weighting}, algorithm.{name,<its parameters>},
        eval.{every,clients,train}, output.{runs_dir,plots,save_model,checkpoint}
  Datasets: digits, mnist, synthetic. Partitions: iid, shards, dirichlet, quantity, natural.
  Algorithms (parameters): fedavg, fedsgd, fedprox (mu), scaffold, fednova,
  fedavgm (momentum), fedadagrad (beta1, tau), fedadam and fedyogi (beta1, beta2, tau),
  qffl (q, lipschitz), e.g. --set algorithm=fedprox --set algorithm.mu=0.1
  Weightings: examples, uniform, inverse_variance.
  Engines: auto, sequential, vectorized, process and ray (with workers=N).
"""


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--set",
        "-s",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key (repeatable), e.g. --set data.partition.alpha=0.1",
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding dataset folders such as mnist/ (default: $FEDLOOM_DATA or "
        "~/.cache/fedloom)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedloom",
        description="Federated Averaging and its family: simulate, compare, deploy.",
        epilog="Run `fedloom COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fedloom {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="simulate an experiment and write a run directory",
        description="Simulate a federated experiment. Writes runs/<name>/ with config.yaml, "
        "metrics.jsonl, metrics.csv, model.safetensors, summary.json and PNG plots.",
        epilog=_CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_arguments(run)
    run.add_argument("--name", help="run name (default: <dataset>-<algorithm>-<timestamp>)")
    run.add_argument("--runs-dir", metavar="DIR", help="where run directories go (default: runs)")
    run.add_argument(
        "--engine",
        choices=("auto", "sequential", "vectorized", "process", "ray"),
        help="simulation engine (default auto: vectorized where the model allows it)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoint, with its config.yaml (--set "
        "rounds=N extends a finished run)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )

    from fedloom.studies import STUDIES

    study = commands.add_parser(
        "study",
        help="rerun a study that checks an algorithm against its paper",
        description="Run one study; writes results.json and a PNG plot to --out "
        "(default runs/studies/<name>).",
        epilog="studies:\n" + "\n".join(f"  {name:<16} {text}" for name, text in STUDIES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    study.add_argument("name", choices=list(STUDIES), metavar="NAME", help="the study to run")
    study.add_argument("--quick", action="store_true", help="a smaller, faster version")
    study.add_argument("--out", metavar="DIR", help="output folder")
    study.add_argument(
        "--data-root",
        metavar="DIR",
        help="dataset folder (mnist-drift, robustness; default $FEDLOOM_DATA)",
    )

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
        epilog=_CONFIG_HELP
        + "  Deploy keys: deploy.{address,certs,tokens,insecure,clients,round_timeout_s,\n"
        "        min_fit_clients,retries,close_early,compress,max_message_mb}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_arguments(server)
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
        "--name", help="run name: the run directory (default <dataset>-<algo>-server)"
    )
    server.add_argument(
        "--runs-dir", metavar="DIR", help="where run directories go (default: runs)"
    )

    client = commands.add_parser(
        "client",
        help="take part in a run as a client",
        description="Connect to a fedloom server and train on this client's data: a share of "
        "the config's dataset (--index, for demos) or your own data (--data-hook FILE.py:FUNC, "
        "a function returning (x, y) tensors). The server's task says how to train; the "
        "config gives the model architecture. Connection problems are retried with backoff.",
    )
    _add_config_arguments(client)
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

    data = commands.add_parser(
        "data", help="inspect federated datasets", description="Inspect federated datasets."
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    describe = data_commands.add_parser(
        "describe",
        help="per-client sizes and label histograms of a partition",
        description="Partition a dataset as a config would and print each client's train and "
        "holdout sizes, number of labels and label histogram.",
        epilog=_CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_arguments(describe)
    describe.add_argument(
        "--limit", type=int, default=50, help="show at most this many clients (default 50)"
    )
    return parser


def _load(args: argparse.Namespace, extra: Sequence[str] = ()):
    from fedloom.config import load_config

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    return load_config(args.config, [*overrides, *extra])


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from fedloom.experiment import run_experiment

    extra = [f"name={args.name}"] if args.name else []
    if args.runs_dir:
        extra.append(f"output.runs_dir={args.runs_dir}")
    if args.engine:
        extra.append(f"engine={args.engine}")
    resume = None
    if args.resume:
        from pathlib import Path

        resume = Path(args.resume)
        if args.config or not (resume / "checkpoint.safetensors").exists():
            raise FedloomError(
                f"--resume {resume}: expected a run directory with config.yaml and "
                "checkpoint.safetensors, and no --config (the run's own config is used)"
            )
        args.config = str(resume / "config.yaml")
    config = _load(args, extra)
    if args.print_config:
        console.print(config.to_yaml(), markup=False, highlight=False)
        return 0
    run_experiment(config, console=console, show_progress=not args.no_progress, resume=resume)
    return 0


def _cmd_study(args: argparse.Namespace, console: Console) -> int:
    import json
    from pathlib import Path

    from fedloom.studies import load_study

    out = Path(args.out or Path("runs") / "studies" / args.name)
    module = load_study(args.name)
    extra = {"data_root": args.data_root} if args.data_root else {}
    console.print(f"[bold]fedloom study[/] {args.name}{' (quick)' if args.quick else ''}")
    results = module.run(out, quick=args.quick, **extra)
    if hasattr(module, "table"):
        console.print(module.table(results))
    else:
        summary = results.get("summary", results)
        compact = {k: v for k, v in summary.items() if not isinstance(v, list)}
        console.print_json(json.dumps(compact, default=str))
    console.print(f"results and plots in {out}/")
    return 0


def _cmd_server(args: argparse.Namespace, console: Console) -> int:
    from pathlib import Path

    from fedloom.config import build_federated
    from fedloom.engine import Checkpoints
    from fedloom.net.deploy import deploy_access, serve, server_credentials_for
    from fedloom.net.server import RoundStarved

    flags = {
        "address": args.address,
        "certs": args.certs,
        "tokens": args.tokens,
        "clients": f"[{args.clients}]" if args.clients else None,
        "round_timeout_s": args.round_timeout,
        "min_fit_clients": args.min_fit_clients,
    }
    extra = [f"deploy.{key}={value}" for key, value in flags.items() if value is not None]
    if args.insecure:
        extra.append("deploy.insecure=true")
    if args.runs_dir:
        extra.append(f"output.runs_dir={args.runs_dir}")
    config = _load(args, extra)
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

    config = _load(args)
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


def _cmd_data_describe(args: argparse.Namespace, console: Console) -> int:
    from fedloom.config import build_federated

    config = _load(args)
    data = build_federated(config)
    rows = data.describe()
    sizes = data.client_sizes
    holdout = sum(len(ix) for ix in data.client_holdout)
    table = Table(
        title=f"{data.dataset.name}: {data.num_clients} clients, "
        f"{config.data.partition.kind} partition"
    )
    caption = (
        f"train sizes: min {sizes.min()}, median {int(sorted(sizes)[len(sizes) // 2])}, "
        f"max {sizes.max()}, total {sizes.sum()}; holdout {holdout}; "
        f"global test set {len(data.dataset.test_y)}"
    )
    for column in ("client", "train", "holdout", "labels"):
        table.add_column(column, justify="right")
    table.add_column("label histogram")
    for row in rows[: args.limit]:
        table.add_row(
            *(str(row[c]) for c in ("client", "train", "holdout", "labels")),
            " ".join(str(v) for v in row["histogram"]),  # type: ignore[attr-defined]
        )
    console.print(table)
    console.print(caption)
    if len(rows) > args.limit:
        console.print(f"... {len(rows) - args.limit} more clients (use --limit)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedloom`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "server":
            return _cmd_server(args, console)
        if args.command == "client":
            return _cmd_client(args, console)
        if args.command == "certs":
            return _cmd_certs(args, console)
        if args.command == "study":
            return _cmd_study(args, console)
        if args.command == "data" and args.data_command == "describe":
            return _cmd_data_describe(args, console)
        parser.print_help() if args.command is None else parser.parse_args([args.command, "--help"])
        return 0
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"fedloom: config error: {problem}", file=sys.stderr)
        return 2
    except FedloomError as exc:
        print(f"fedloom: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fedloom: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
