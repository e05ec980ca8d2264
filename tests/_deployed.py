"""One round with one real client over a real gRPC server on loopback (plaintext).

For tests that compare what a deployed client trains with what the simulation trains: the
server side is a :class:`~fedloom.net.server.RoundBoard` opened with one plan, the client is
:func:`~fedloom.net.client.run_client` in a thread, and the returned result is exactly what
the server received."""

import threading
import time

import torch

from fedloom.client import ClientProgram, LocalTraining
from fedloom.net.client import run_client
from fedloom.net.server import Access, RoundBoard, start_server
from fedloom.types import ClientPlan, ClientResult


def one_deployed_round(
    plan: ClientPlan,
    params: torch.Tensor,
    buffers: torch.Tensor,
    *,
    settings: LocalTraining,
    program: ClientProgram,
    **client: object,
) -> ClientResult:
    """Serve ``plan`` to a client called alice (``client`` are run_client's keywords: data,
    module, task ...) and return the result the server got from it."""
    board = RoundBoard(
        Access(("alice",), trust_claimed_ids=True),
        settings,
        max_tensor_bytes=1 << 20,
        program=program,
    )
    server, port = start_server(board, "127.0.0.1:0", credentials=None, max_message_bytes=1 << 22)
    try:
        board.open([plan], params, buffers)
        thread = threading.Thread(
            target=run_client,
            args=(f"127.0.0.1:{port}",),
            kwargs={"client_id": "alice", **client},
            daemon=True,
        )
        thread.start()
        assert board.wait_for(1, time.monotonic() + 60) == 1
        result = board.close()[0]
        board.finish()
        thread.join(timeout=30)
    finally:
        server.stop(grace=None)
    return result
