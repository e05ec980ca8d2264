"""Benchmark D1 of ../shared/BENCHMARKS.md: rounds over real gRPC with TLS on loopback.

One ``fedloom server`` process and N clients (N = 10 and 100) of FedAvg with the MNIST 2NN,
E = 1, B = 10, all clients every round, 5 rounds. Clients run in 10 host processes
(``benchmarks.deploy_clients``), each client with its own certificate and TLS connection.

Reported per N:

- the per-round wall time of the networked run (the server's round: open, train, collect,
  aggregate, evaluate); round 1 also contains the clients' start-up, so the steady state
  is the median of rounds 2-5;
- the same round's pure local-compute time: the longest local training among the round's
  clients, as each client timed it (train_client only: no decoding, encoding or waiting);
  the clients run concurrently, so this is the round's critical path of computation;
- their difference, the protocol overhead: broadcast, decode, upload, validation,
  aggregation and evaluation, everything that is not the slowest client training;
- for context, the identical run (same seed, cohort, model) with the sequential engine in
  this process, one client after another with no network at all;
- protobuf payload bytes per client per round, each way, as the server counted them (TLS
  and HTTP/2 framing not included);
- the server process's peak resident memory (``ru_maxrss`` from ``wait4``).

Run: ``make bench-deploy`` or ``python -m benchmarks.run_deploy`` (MNIST from ``--data-root``
or $FEDLOOM_DATA, else downloaded; writes benchmarks/results/deploy.json).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from benchmarks.run_workloads import machine
from fedloom.config import RunConfig
from fedloom.engine import Callback
from fedloom.experiment import simulate_config
from fedloom.net.certs import write_quickstart

HOSTS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RoundTimes(Callback):
    def __init__(self):
        self.wall: list[float] = []

    def on_round(self, report, state):
        self.wall.append(report.metrics["wall_s"])


def _config(num_clients: int, rounds: int, data_root: str | None) -> dict:
    return {
        "name": "d1",
        "seed": 0,
        "rounds": rounds,
        "data": {"dataset": "mnist", "root": data_root, "num_clients": num_clients,
                 "partition": "iid"},
        "model": {"name": "mnist_2nn"},
        "client": {"epochs": 1, "batch_size": 10, "lr": 0.05},
        "server": {"fraction": 1.0},
        "eval": {"clients": False},
        "deploy": {"round_timeout_s": 600},
    }  # fmt: skip


def measure(num_clients: int, rounds: int, data_root: str | None, console: Console) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ids = [f"client-{k}" for k in range(num_clients)]
        write_quickstart(folder / "certs", ids)
        config_path = folder / "run.yaml"
        config_path.write_text(yaml.safe_dump(_config(num_clients, rounds, data_root)))
        port = _free_port()
        server_command = [
            sys.executable, "-m", "fedloom.cli", "server", "--config", str(config_path),
            "--certs", str(folder / "certs"), "--address", f"127.0.0.1:{port}",
            "--runs-dir", str(folder / "runs"),
        ]  # fmt: skip
        log = (folder / "server.log").open("w")
        server = subprocess.Popen(server_command, env=env, stdout=log, stderr=subprocess.STDOUT)
        while "listening on port" not in (folder / "server.log").read_text():
            if server.poll() is not None:
                raise RuntimeError((folder / "server.log").read_text())
            time.sleep(0.1)
        console.print(f"N = {num_clients}: server up; starting {HOSTS} client hosts")
        hosts = []
        for h in range(HOSTS):
            indices = ",".join(str(k) for k in range(h, num_clients, HOSTS))
            host_command = [
                sys.executable, "-m", "benchmarks.deploy_clients", "--config", str(config_path),
                "--server", f"127.0.0.1:{port}", "--certs", str(folder / "certs"),
                "--indices", indices,
            ]  # fmt: skip
            hosts.append(subprocess.Popen(host_command, env=env, stdout=subprocess.DEVNULL))
        _, status, usage = os.wait4(server.pid, 0)
        log.close()
        if status != 0:
            raise RuntimeError((folder / "server.log").read_text())
        for host in hosts:
            host.wait(timeout=120)
        lines = (folder / "runs" / "d1" / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]

    console.print(f"N = {num_clients}: the same run with the sequential engine, no network")
    config = RunConfig.model_validate({**_config(num_clients, rounds, data_root),
                                       "engine": "sequential"})  # fmt: skip
    times = _RoundTimes()
    simulate_config(config, callbacks=[times])
    per_round = []
    for record, compute in zip(records, times.wall, strict=True):
        per_round.append(
            {
                "round": record["round"],
                "wall_s": record["wall_s"],
                "local_compute_s": record["client_compute_s_max"],
                "overhead_s": record["wall_s"] - record["client_compute_s_max"],
                "client_compute_s_sum": record["client_compute_s_sum"],
                "sequential_in_process_s": compute,
                "bytes_down_per_client": record["wire_bytes_down"] / num_clients,
                "bytes_up_per_client": record["wire_bytes_up"] / num_clients,
                "updates": record["num_results"],
                "test_accuracy": record.get("test_accuracy"),
            }
        )
    steady = per_round[1:] or per_round
    return {
        "clients": num_clients,
        "rounds": per_round,
        "steady_state": {
            key: statistics.median(r[key] for r in steady)
            for key in (
                "wall_s",
                "local_compute_s",
                "overhead_s",
                "bytes_down_per_client",
                "bytes_up_per_client",
                "sequential_in_process_s",
            )
        },  # fmt: skip
        "server_peak_rss_mb": usage.ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-root", default=os.environ.get("FEDLOOM_DATA"))
    parser.add_argument("--out", default="benchmarks/results/deploy.json")
    args = parser.parse_args(argv)
    console = Console(width=140)
    results = [measure(n, args.rounds, args.data_root, console) for n in args.clients]
    payload = {
        "benchmark": "D1 loopback-round",
        "command": "python -m benchmarks.run_deploy " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "setup": "FedAvg, MNIST 2NN (199,210 params), iid, E = 1, B = 10, C = 1.0, TLS with "
        f"client certificates on 127.0.0.1, clients in {HOSTS} host processes",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    table = Table(title="D1: one round over gRPC + TLS on loopback (median of rounds 2-5)")
    for column in ("N", "round wall s", "local compute s", "overhead s", "overhead %",
                   "kB down/client", "kB up/client", "server peak MB",
                   "sequential in-process s"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in results:
        s = r["steady_state"]
        table.add_row(
            str(r["clients"]),
            f"{s['wall_s']:.2f}",
            f"{s['local_compute_s']:.2f}",
            f"{s['overhead_s']:.2f}",
            f"{100 * s['overhead_s'] / s['wall_s']:.0f}%",
            f"{s['bytes_down_per_client'] / 1e3:.0f}",
            f"{s['bytes_up_per_client'] / 1e3:.0f}",
            f"{r['server_peak_rss_mb']:.0f}",
            f"{s['sequential_in_process_s']:.2f}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
