"""Processes the tests start, and deadlines that follow the machine's speed.

Shared by every test that starts ``fedloom`` processes (``tests/net/_harness.py``); the
root ``conftest.py`` kills whatever a test left running, even when it failed.
"""

from __future__ import annotations

import subprocess
import time

REFERENCE_S = 0.11  # the probe below on one idle core of the CI machine (AMD EPYC, 2026-12)
LIVE: list[subprocess.Popen] = []  # every process started here; conftest kills leftovers


def _measured_slowdown() -> float:
    """How much slower this machine is right now than the idle reference: a fixed single-
    threaded torch workload, timed once when the tests start (a loaded or slower machine
    gets proportionally longer deadlines; never shorter ones)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
        for _ in range(200):
            x = torch.tanh(x @ x * 0.01)
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return max(1.0, elapsed / REFERENCE_S)


SLOWDOWN = _measured_slowdown()


def patient(seconds: float) -> float:
    """A test deadline of ``seconds`` on the idle reference machine, scaled to this one."""
    return seconds * SLOWDOWN


def kill_leftovers() -> list[str]:
    """SIGKILL every process started here that is still running (a failed test's), so it
    cannot hold a port or a core in the next test; the commands that were killed."""
    killed = []
    while LIVE:
        process = LIVE.pop()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
            killed.append(" ".join(map(str, process.args[3:5])))
    return killed
