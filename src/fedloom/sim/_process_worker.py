"""Entry point of one process-engine worker: ``python -m fedloom.sim._process_worker ADDRESS``.

The worker reads the key its parent wrote to its stdin pipe (one line of hex), then connects
back over a Unix socket, authenticated with that key (multiprocessing's HMAC challenge), so
only the parent that started it can talk to it. The key comes by pipe, not environment
variable or argument, because any process of the same user can read those in ``/proc``.
It receives its setup once, builds an in-process executor, then trains the shares of each
round it is sent until it receives ``None``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from multiprocessing.connection import Client


def read_authkey() -> bytes:
    """The key on stdin: the parent writes one line of hex and closes the pipe."""
    line = sys.stdin.buffer.readline()
    try:
        key = bytes.fromhex(line.decode("ascii"))
    except ValueError:  # also UnicodeDecodeError
        key = b""
    if not key:  # an empty line or none: the parent died, or a person ran this module
        raise SystemExit(
            "fedloom worker: no key on stdin; workers are started by the process engine"
        )
    return key


def main(address: str) -> None:
    authkey = read_authkey()  # first, before slow imports: the pipe holds it until then

    import torch

    from fedloom.sim import make_executor
    from fedloom.sim.isolation import engine_name

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
