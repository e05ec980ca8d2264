"""Start-up cost: how long ``import fedloom`` and ``fedloom --help`` take, and what they load.

A command line that takes seconds to print its help, or a library whose import drags in
plotting, networking and cluster code, taxes every use. Each measurement runs in a fresh
interpreter (``sys.executable``, with this process's environment, so PYTHONPATH picks the
checkout) and is repeated; the figure is the median. Measured:

- ``python -c pass``: the interpreter alone, the floor under every other row;
- ``import fedloom``: the import timed inside the child (interpreter start-up excluded);
- ``fedloom --help``, ``fedloom run --help``: wall time of ``python -m fedloom.cli ...``.

For each, the child also reports whether torch, matplotlib, grpc, ray and cryptography were
imported. The tests assert the "not imported" part (tests/test_light_import.py); timings are
only recorded here, since on shared machines they drift.

Run: ``python -m benchmarks.run_startup`` (writes benchmarks/results/startup.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.run_workloads import machine

HEAVY = ("torch", "matplotlib", "grpc", "ray", "cryptography")

# Each child prints one JSON line: its own timing (if it takes one) and the heavy modules it
# loaded. ``--help`` exits through SystemExit, so the report is written by an atexit hook.
_PROBE = """\
import atexit, json, sys, time
def _report(seconds=None):
    heavy = [m for m in {heavy!r} if m in sys.modules]
    print(json.dumps({{"seconds": seconds, "heavy": heavy, "modules": len(sys.modules)}}),
          file=sys.__stderr__)
{body}
"""
_BODIES = {
    "python -c pass": "_report()",
    "import fedloom": (
        "started = time.perf_counter()\nimport fedloom\n_report(time.perf_counter() - started)"
    ),
    "fedloom --help": (
        "atexit.register(_report)\nsys.argv = ['fedloom', '--help']\n"
        "import runpy\nrunpy.run_module('fedloom.cli', run_name='__main__', alter_sys=True)"
    ),
    "fedloom run --help": (
        "atexit.register(_report)\nsys.argv = ['fedloom', 'run', '--help']\n"
        "import runpy\nrunpy.run_module('fedloom.cli', run_name='__main__', alter_sys=True)"
    ),
}


def measure(body: str, repeats: int) -> dict:
    """Median and minimum wall time (and in-child time, if any) of ``repeats`` fresh runs."""
    code = _PROBE.format(heavy=HEAVY, body=body)
    walls, inner, report = [], [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr}")
        report = json.loads(done.stderr.strip().splitlines()[-1])
        if report["seconds"] is not None:
            inner.append(report["seconds"])
    return {
        "wall_s_median": statistics.median(walls),
        "wall_s_min": min(walls),
        "inner_s_median": statistics.median(inner) if inner else None,
        "heavy_modules_loaded": report["heavy"],
        "modules_loaded": report["modules"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per row (default 7)")
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    args = parser.parse_args(argv)
    rows = {name: measure(body, args.repeats) for name, body in _BODIES.items()}
    result = {
        "benchmark": "start-up: import fedloom, fedloom --help",
        "command": "python -m benchmarks.run_startup " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = Table(title=f"start-up, median of {args.repeats} fresh interpreters")
    for column in ("what", "wall s", "import s", "modules", "heavy modules loaded"):
        table.add_column(
            column, justify="left" if column in ("what", "heavy modules loaded") else "right"
        )
    for name, row in rows.items():
        inner = row["inner_s_median"]
        table.add_row(
            name,
            f"{row['wall_s_median']:.3f}",
            f"{inner:.3f}" if inner is not None else "",
            str(row["modules_loaded"]),
            ", ".join(row["heavy_modules_loaded"]) or "none",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
