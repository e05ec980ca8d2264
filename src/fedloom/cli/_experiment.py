"""``fedloom run``, ``fedloom study`` and ``fedloom data describe``: experiments in one process.

Building these parsers imports nothing heavy (the engine names come from
:mod:`fedloom.names`, the studies from :mod:`fedloom.studies`' table), so ``--help`` answers
at once; each handler imports what its command needs when it runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fedloom.cli._config_args import (
    CONFIG_HELP,
    add_config_arguments,
    add_tracking_arguments,
    load_run_config,
    tracking_overrides,
)
from fedloom.errors import FedloomError
from fedloom.names import ENGINES
from fedloom.studies import STUDIES

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["add_experiment_commands"]


def add_experiment_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``run``, ``study`` and ``data describe``, each with its handler as ``handler``."""
    run = commands.add_parser(
        "run",
        help="simulate an experiment and write a run directory",
        description="Simulate a federated experiment. Writes runs/<name>/ with config.yaml, "
        "metrics.jsonl, metrics.csv, model.safetensors, summary.json and PNG plots.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(run)
    run.add_argument("--name", help="run name (default: <dataset>-<algorithm>-<timestamp>)")
    run.add_argument("--runs-dir", metavar="DIR", help="where run directories go (default: runs)")
    add_tracking_arguments(run)
    run.add_argument(
        "--engine",
        metavar="NAME",
        help=f"simulation engine: {', '.join(ENGINES)} or one you registered "
        "(default auto: vectorized where the model allows it)",
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
    run.set_defaults(handler=_cmd_run)

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
        help="dataset folder (mnist-drift, robustness, rare-events, dp-tradeoff, "
        "personalization; default $FEDLOOM_DATA)",
    )
    study.set_defaults(handler=_cmd_study)

    data = commands.add_parser(
        "data", help="inspect federated datasets", description="Inspect federated datasets."
    )
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    describe = data_commands.add_parser(
        "describe",
        help="per-client sizes and label histograms of a partition",
        description="Partition a dataset as a config would and print each client's train and "
        "holdout sizes, number of labels and label histogram.",
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(describe)
    describe.add_argument(
        "--limit", type=int, default=50, help="show at most this many clients (default 50)"
    )
    describe.set_defaults(handler=_cmd_data_describe)


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from fedloom.experiment import run_experiment

    extra = [f"name={args.name}"] if args.name else []
    if args.runs_dir:
        extra.append(f"output.runs_dir={args.runs_dir}")
    extra.extend(tracking_overrides(args))
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
    config = load_run_config(args, extra)
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


def _cmd_data_describe(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from fedloom.config import build_federated

    config = load_run_config(args)
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
    left_out = data.dataset.num_train - int(sizes.sum()) - holdout
    if left_out:  # a partition that is not exhaustive (rare_class)
        caption += f"; {left_out} training examples left out by the partition"
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
