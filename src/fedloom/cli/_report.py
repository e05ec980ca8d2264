"""``fedloom report`` and ``fedloom compare``: finished runs side by side.

Built from light modules only; the handlers import matplotlib and the readers when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

__all__ = ["add_report_commands"]


def add_report_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="one self-contained HTML page comparing run directories",
        description="Compare finished runs on one HTML page (figures embedded, no other "
        "files): the task's test score against rounds, bytes sent and wall time, the "
        "per-client spread, a table of final metrics, and the config keys that differ.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories (written by fedloom run or fedloom server)")  # fmt: skip
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                        help="the page to write (default report.html)")  # fmt: skip
    report.add_argument("--title", default="fedloom runs", help="the page's title")
    report.set_defaults(handler=_cmd_report)

    compare = commands.add_parser(
        "compare",
        help="the final metrics of run directories as a table in the terminal",
        description="Print one row per run (final and best test score, loss, per-client "
        "mean and worst 10%%, epsilon, traffic, time) and the config keys that differ.",
    )
    compare.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    compare.set_defaults(handler=_cmd_compare)


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from fedloom.report.compare import load_runs, write_report

    path = write_report(load_runs(args.runs), args.output, title=args.title)
    console.print(f"wrote {path} ({len(args.runs)} runs)")
    return 0


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from fedloom.report.compare import comparison_table, load_runs

    console.print(comparison_table(load_runs(args.runs)))
    return 0
