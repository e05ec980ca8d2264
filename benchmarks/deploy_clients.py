"""A client host for benchmark D1: one process running several fedloom clients in threads.

Each client has its own TLS channel (its own certificate and connection), as separate
devices would; sharing the process only saves loading the dataset and torch N times.

Run by ``benchmarks.run_deploy``; by hand:
``python -m benchmarks.deploy_clients --config run.yaml --server 127.0.0.1:PORT --certs DIR
--indices 0,1,2``.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import torch

from fedloom.config import build_federated, build_model, load_config
from fedloom.net.client import run_client
from fedloom.net.tls import channel_credentials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--certs", required=True)
    parser.add_argument("--indices", required=True, help="comma-separated client indices")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # many hosts share the cores
    config = load_config(args.config)
    data = build_federated(config)
    certs = Path(args.certs)
    failures: list[BaseException] = []

    def client(index: int) -> None:
        name = f"client-{index}"
        try:
            run_client(
                args.server,
                client_id=name,
                data=data.client_batch(index),
                module=build_model(config, data.dataset)(),
                credentials=channel_credentials(
                    certs / "ca.pem", certs / f"client-{name}.pem", certs / f"client-{name}.key"
                ),
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [
        threading.Thread(target=client, args=(int(i),)) for i in args.indices.split(",") if i
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for failure in failures:
        print(f"client failed: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
