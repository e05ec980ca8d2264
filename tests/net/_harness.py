"""What the networked tests share: free ports, a server in a thread, `fedloom` processes
whose output is read in the background, and the simulation a deployed run must match."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time

from _processes import LIVE, SLOWDOWN, kill_leftovers, patient  # noqa: F401
from fedloom.experiment import simulate_config
from fedloom.net.deploy import serve
from fedloom.net.server import Access
from fedloom.net.tls import server_credentials

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_in_thread(config, clients, certs, *, address="127.0.0.1:0", callbacks=(), **options):
    """Start :func:`serve` in a thread; ``outcome`` gets ``port``, then ``history`` or
    ``error``; ``options`` go to :func:`serve` (``on_dashboard`` ...)."""
    started, outcome = threading.Event(), {}

    def target():
        try:
            outcome["history"] = serve(
                config,
                address=address,
                access=Access(tuple(clients)),
                credentials=server_credentials(
                    certs / "server.pem", certs / "server.key", certs / "ca.pem"
                ),
                callbacks=callbacks,
                on_listening=lambda port: (outcome.__setitem__("port", port), started.set()),
                **options,
            )
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
            started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(60)
    return thread, outcome


def client_thread(config, data, certs, client_id, index, port, state_path=None, **options):
    """A real :func:`run_client` in a thread, training share ``index`` of ``data`` over mutual
    TLS with the quick-start certificates in ``certs``; ``options`` go to ``run_client``."""
    from fedloom.config import build_model
    from fedloom.net.client import run_client
    from fedloom.net.tls import channel_credentials

    def target():
        run_client(
            f"127.0.0.1:{port}",
            client_id=client_id,
            data=data.client_batch(index),
            module=build_model(config, data.dataset)(),
            credentials=channel_credentials(
                certs / "ca.pem",
                certs / f"client-{client_id}.pem",
                certs / f"client-{client_id}.key",
            ),
            give_up_after_s=60,
            state_path=state_path,
            **options,
        )

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def simulated(config):
    """The final state of ``config`` simulated with the reference (sequential) engine."""
    return simulate_config(config.model_copy(update={"engine": "sequential"})).final_state


class Output:
    """A process's output lines, read in the background so the pipe never fills."""

    def __init__(self, process):
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.closed = False
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process):
        with process.stdout:
            for line in process.stdout:
                self.lines.put(line)
        self.closed = True

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen in {timeout} s; output: {''.join(self.seen)}")

    def rest(self):
        deadline = time.monotonic() + 10
        while not self.closed and time.monotonic() < deadline:
            time.sleep(0.05)  # the process has exited: let the pump read its last lines
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


def fedloom(*args, cwd=None):
    """``python -m fedloom.cli ARGS`` with its output collected by an :class:`Output`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fedloom.cli", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    LIVE.append(process)
    return process, Output(process)


def client_process(config_path, certs, client_id, index, port, *extra):
    """A demo ``fedloom client`` process training share ``index`` of the config's data."""
    return fedloom(
        "client", "--config", str(config_path), "--server", f"127.0.0.1:{port}",
        "--client-id", client_id, "--index", str(index), "--certs", str(certs), *extra,
    )  # fmt: skip
