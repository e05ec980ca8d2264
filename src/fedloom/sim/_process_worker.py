"""Entry point of one process-engine worker: ``python -m fedloom.sim._process_worker ADDRESS``.

The worker connects back to its parent over a Unix socket, authenticated with the key in
``FEDLOOM_WORKER_AUTHKEY`` (multiprocessing's HMAC challenge), so only the parent that
started it can talk to it. It receives its setup once, builds an in-process executor, then
trains the shares of each round it is sent until it receives ``None``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from multiprocessing.connection import Client


def main(address: str) -> None:
    import torch

    from fedloom.sim import make_executor
    from fedloom.sim.isolation import engine_name

    authkey = bytes.fromhex(os.environ["FEDLOOM_WORKER_AUTHKEY"])
    # Shared-memory tensors from the parent are fetched with the process authkey.
    multiprocessing.current_process().authkey = authkey
    connection = Client(address, family="AF_UNIX", authkey=authkey)
    try:
        setup = connection.recv()
        torch.set_num_threads(setup["threads"])
        executor = make_executor(
            setup["inner"],
            setup["module"],
            setup["data"],
            setup["settings"],
            program=setup["program"],
            task=setup["task"],
        )
        # the parent matches connections (in the order they came) to processes by pid
        connection.send(("ready", {"engine": engine_name(executor), "pid": os.getpid()}))
    except Exception:
        connection.send(("error", traceback.format_exc()))
        return
    while True:
        message = connection.recv()
        if message is None:
            return
        plans, params, buffers, context = message
        try:
            connection.send(("ok", executor.fit(plans, params, buffers, context)))
        except Exception:  # the parent raises with this traceback
            connection.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    main(sys.argv[1])
