"""The failure policy: what a failed client does to its round.

Executors never raise for one client's failure (an exception in its training, a worker
process or Ray actor that died, a device that dropped out): they return a
:class:`~fedloom.types.ClientFailure` in its place. The round loop logs each failure with the
client, round and reason, counts them in ``num_failures``, and then applies the policy:

- ``"skip"`` (the default): the round goes on with the clients that returned; a round left
  with too few updates is skipped like any other short round;
- ``"abort"``: the run stops with a :class:`~fedloom.errors.ClientError` naming the first
  failed client, the round and the error, for debugging a client that should never fail.
  The round is not checkpointed, so a resumed run repeats it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from fedloom.errors import ClientError
from fedloom.types import ClientFailure

__all__ = ["ON_CLIENT_ERROR", "OnClientError", "check_on_client_error", "judge_failures"]

log = logging.getLogger("fedloom")

OnClientError = Literal["skip", "abort"]
ON_CLIENT_ERROR: tuple[OnClientError, ...] = ("skip", "abort")


def judge_failures(
    failures: Sequence[ClientFailure], *, round_number: int, on_client_error: OnClientError
) -> None:
    """Log the round's failures; raise :class:`ClientError` for the first under ``abort``.

    ``round_number`` is 1-based, as in the log and ``metrics.jsonl``.
    """
    for failure in failures:
        log.warning(
            "round %d: client %d failed: %s", round_number, failure.client_id, failure.reason
        )
    if on_client_error == "skip" or not failures:
        return
    first = failures[0]
    more = f" (and {len(failures) - 1} more client(s))" if len(failures) > 1 else ""
    raise ClientError(
        f"round {round_number}: client {first.client_id} failed: {first.reason}{more}. The run "
        "stops because on_client_error is 'abort'; set it to 'skip' (config "
        "server.on_client_error, or simulate(on_client_error='skip')) to leave failed clients "
        "out of their round and go on",
        client_id=first.client_id,
        round=round_number,
        reason=first.reason,
    )


def check_on_client_error(value: str) -> OnClientError:
    """``value`` as a policy, or a ``ValueError`` that names the choices."""
    for choice in ON_CLIENT_ERROR:
        if value == choice:
            return choice
    raise ValueError(f"on_client_error must be one of {', '.join(ON_CLIENT_ERROR)}, got {value!r}")
