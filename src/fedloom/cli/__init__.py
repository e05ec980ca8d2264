"""The ``fedloom`` command line: experiments in one process, and runs over the network.

Commands: ``run``, ``study``, ``data describe``, ``server``, ``client``, ``certs``,
``privacy``, ``report``, ``compare``. The
parser is built from light modules only (no torch, matplotlib, gRPC or cryptography), so
``fedloom --help`` and ``fedloom COMMAND --help`` answer at once; each command's handler
imports what it needs when it runs. Commands live by group: :mod:`fedloom.cli._experiment`
(in-process experiments) and :mod:`fedloom.cli._deploy` (the network).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fedloom import __version__
from fedloom.cli._deploy import add_deploy_commands
from fedloom.cli._experiment import add_experiment_commands
from fedloom.cli._privacy import add_privacy_command
from fedloom.cli._report import add_report_commands
from fedloom.errors import ConfigError, FedloomError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedloom",
        description="Federated Averaging and its family: simulate, compare, deploy.",
        epilog="Run `fedloom COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fedloom {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_experiment_commands(commands)
    add_deploy_commands(commands)
    add_privacy_command(commands)
    add_report_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedloom`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # `fedloom` or `fedloom data` alone: that level's help
        if args.command is None:
            parser.print_help()
            return 0
        parser.parse_args([args.command, "--help"])  # prints that command's help, exits 0
        return 0
    from rich.console import Console

    console = Console(soft_wrap=True)  # a message with a path stays on one line: copyable
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(handler(args, console))
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
