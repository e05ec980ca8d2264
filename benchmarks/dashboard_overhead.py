"""What the live dashboard costs a deployed round: a server with and without ``--dashboard``.

A real TLS server (in this process) runs digits with four clients (one client process,
``benchmarks.deploy_clients``) twice per repeat, dashboard off and on, interleaved so machine
load hits both alike. With the dashboard on, a watcher polls ``api/status`` every 0.5 s and
reloads the page every 5 s: four times the page's own refresh rate, so the figure is an
upper bound for one open browser tab. The figure is the median round wall time (rounds 2
onwards; round 1 waits for the clients to start) with the dashboard over the median without;
the goal is under 5% more.

Run: ``python -m benchmarks.dashboard_overhead`` (writes benchmarks/results/dashboard.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

from rich.console import Console
from rich.table import Table

from benchmarks.run_workloads import machine
from fedloom.config import RunConfig
from fedloom.net.certs import write_quickstart
from fedloom.net.dashboard import REFRESH_MS, Dashboard
from fedloom.net.deploy import deploy_access, serve, server_credentials_for

CLIENTS = 4
POLL_S = 0.5


def _config(rounds: int, certs: Path, dashboard: bool) -> RunConfig:
    return RunConfig.from_dict(
        {
            "seed": 0,
            "rounds": rounds,
            "data": {"dataset": "digits", "num_clients": CLIENTS, "partition": "iid"},
            "model": {"name": "digits_mlp"},
            "client": {"epochs": 5, "batch_size": 10, "lr": 0.05},
            "server": {"fraction": 1.0},
            "eval": {"clients": False},
            "deploy": {"certs": str(certs), "dashboard": 0 if dashboard else None},
        }
    )


def _watch(url: str, token: str, cafile: str) -> None:
    """Poll like an eager browser tab (a separate process, as a browser is) until the
    dashboard goes away; prints the number of requests made."""
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    header = {"Authorization": f"Bearer {token}"}
    made, latencies = 0, []
    try:
        while True:
            time.sleep(POLL_S)
            for path in ["api/status"] + ([""] if made % 10 == 0 else []):
                request = urllib.request.Request(url + path, headers=header)
                started = time.perf_counter()
                with urllib.request.urlopen(request, timeout=10, context=context) as reply:
                    reply.read()
                latencies.append(time.perf_counter() - started)
                made += 1
    except OSError:  # the run is over: the dashboard stopped listening
        print(json.dumps(latencies))


def _one_run(
    rounds: int, folder: Path, dashboard_on: bool
) -> tuple[list[float], list[float], float]:
    config = _config(rounds, folder, dashboard_on)
    (folder / "run.yaml").write_text(config.to_yaml())
    ports: list[int] = []
    listening = threading.Event()
    watchers: list[subprocess.Popen[str]] = []

    def on_dashboard(dashboard: Dashboard) -> None:
        watchers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.dashboard_overhead",
                    "--watch",
                    dashboard.url,
                    dashboard.token,
                    str(folder / "ca.pem"),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )

    outcome: dict[str, object] = {}

    def server() -> None:
        outcome["history"] = serve(
            config,
            access=deploy_access(config.deploy, CLIENTS),
            credentials=server_credentials_for(config.deploy),
            address="127.0.0.1:0",
            on_listening=lambda port: (ports.append(port), listening.set()),
            on_dashboard=on_dashboard,
        )

    cpu = time.process_time()  # this process is the server: its CPU, not the machine's load
    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    listening.wait(60)
    clients = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.deploy_clients", "--config", str(folder / "run.yaml"),
         "--server", f"127.0.0.1:{ports[0]}", "--certs", str(folder),
         "--indices", ",".join(map(str, range(CLIENTS)))],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    thread.join()
    cpu = time.process_time() - cpu
    clients.wait(timeout=60)
    made = [t for w in watchers for t in json.loads(w.communicate(timeout=30)[0])]
    history = outcome["history"]
    walls = [r.metrics["wall_s"] for r in history.reports[1:]]  # type: ignore[attr-defined]
    return walls, made, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/dashboard.json")
    parser.add_argument(
        "--watch", nargs=3, metavar=("URL", "TOKEN", "CAFILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.watch:
        _watch(*args.watch)
        return
    per_round: dict[str, list[float]] = {"off": [], "on": []}
    server_cpu: dict[str, list[float]] = {"off": [], "on": []}
    latencies: list[float] = []
    with TemporaryDirectory() as name:
        folder = Path(name)
        write_quickstart(folder, [f"client-{k}" for k in range(CLIENTS)])
        for _ in range(args.repeats):
            for kind in per_round:
                walls, made, cpu = _one_run(args.rounds, folder, kind == "on")
                per_round[kind].extend(walls)
                server_cpu[kind].append(cpu)
                latencies.extend(made)
    off, on = (statistics.median(per_round[k]) for k in ("off", "on"))
    cpu_off, cpu_on = (statistics.median(server_cpu[k]) for k in ("off", "on"))
    # the robust figure: the server CPU one request costs, and so one open tab at the page's
    # own refresh rate (REFRESH_MS), as a share of one core; wall time is at the mercy of load
    cpu_per_request = (cpu_on - cpu_off) / (len(latencies) / args.repeats)
    tab_share = cpu_per_request / (REFRESH_MS / 1000)
    result = {
        "command": "python -m benchmarks.dashboard_overhead " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "setup": f"digits, {CLIENTS} TLS clients (one process), E=5, B=10, every client every "
        f"round; dashboard polled every {POLL_S} s (api/status) and the page every {10 * POLL_S} s",
        "rounds": args.rounds,
        "repeats": args.repeats,
        "dashboard_requests": len(latencies),
        "request_latency_ms_median": 1000 * statistics.median(latencies) if latencies else None,
        "median_round_s": {"off": off, "on": on},
        "overhead_percent": 100 * (on / off - 1),
        "server_cpu_s_per_run": server_cpu,
        "server_cpu_ms_per_request": 1000 * cpu_per_request,
        "one_tab_core_share_percent": 100 * tab_share,
        "round_s": per_round,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    table = Table(title="dashboard overhead (deployed digits run, rounds 2 onwards)")
    for column in ("dashboard", "s / round (median)", "overhead", "server CPU s / run"):
        table.add_column(column, justify="right")
    table.add_row("off", f"{off:.3f}", "", f"{cpu_off:.2f}")
    table.add_row("on, polled", f"{on:.3f}", f"{result['overhead_percent']:+.1f}%",
                  f"{cpu_on:.2f}")  # fmt: skip
    Console().print(table)
    Console().print(
        f"server CPU per dashboard request: {1000 * cpu_per_request:.2f} ms; one open tab "
        f"(a request every {REFRESH_MS / 1000:g} s) costs {100 * tab_share:.2f}% of one core"
    )


if __name__ == "__main__":
    main()
