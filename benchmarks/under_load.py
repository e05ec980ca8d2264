"""The networked and fault tests under load: both cores saturated, five runs in a row.

Issue 13 asked for proof that the deployment tests hold on a busy machine: a test whose
deadline is shorter than a loaded machine's start-up time fails there and not on an idle
one. This starts ``--load`` busy-looping processes (default: one per core), runs the
networked tests (``tests/net``: real TLS servers, client processes, SIGKILLed clients and
servers) ``--runs`` times, and writes every run's outcome and duration, the machine and the
command to ``benchmarks/results/under_load.json``.

Run: ``make test-under-load`` (or ``python -m benchmarks.under_load --runs 5``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.run_workloads import machine

BUSY = "while True: pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="busy processes")
    parser.add_argument("--tests", default="tests/net", help="what pytest runs")
    parser.add_argument("--out", default="benchmarks/results/under_load.json")
    args = parser.parse_args(argv)
    load = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.load)]
    runs = []
    probe = "import sys; sys.path.insert(0, 'tests'); import _processes; print(_processes.SLOWDOWN)"
    try:
        slowdown = float(
            subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout
        )  # fmt: skip
        print(f"machine-speed probe under load: deadlines x {slowdown:.2f}", flush=True)
        for number in range(1, args.runs + 1):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", args.tests],
                capture_output=True,
                text=True,
            )
            lines = done.stdout.strip().splitlines()
            runs.append(
                {
                    "run": number,
                    "exit_code": done.returncode,
                    "summary": lines[-1] if lines else "",
                    "wall_s": round(time.perf_counter() - started, 1),
                }
            )
            print(f"run {number}: {runs[-1]['summary']} ({runs[-1]['wall_s']} s)", flush=True)
            if done.returncode != 0:
                print(done.stdout[-5000:], flush=True)
    finally:
        for process in load:
            process.kill()
            process.wait()
    result = {
        "benchmark": f"{args.tests} under load: {args.load} busy processes on "
        f"{os.cpu_count()} cores, {args.runs} runs in a row",
        "command": "python -m benchmarks.under_load " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "deadline_scale_under_load": round(slowdown, 2),
        "runs": runs,
        "all_passed": all(r["exit_code"] == 0 for r in runs),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["all_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
