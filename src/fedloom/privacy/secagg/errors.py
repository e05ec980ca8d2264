"""The errors of secure aggregation, all under :class:`~fedloom.errors.FedloomError`.

A transport (the simulation stage, the gRPC server) catches :class:`SecAggError` to tell a
protocol failure from a bug. :class:`SecAggAborted` is the one that ends a round: too few
clients are left for the threshold, so the server cannot (and must not) learn anything; the
model stays unchanged and ``reason`` says why. The others describe one bad value (a share, a
message, a request) and are usually recorded by the server as a rejection rather than raised.
"""

from __future__ import annotations

from fedloom.errors import FedloomError

__all__ = ["MessageError", "ProtocolError", "SecAggAborted", "SecAggError", "ShareError"]


class SecAggError(FedloomError):
    """Root of the secure-aggregation errors."""


class SecAggAborted(SecAggError):
    """The round cannot finish: fewer than ``threshold`` clients are left after ``phase``,
    or a dropped or surviving client's secret cannot be reconstructed. Nothing beyond the
    masked vectors (one-time-padded) and the encrypted shares was revealed to the server."""

    def __init__(self, reason: str, *, round: int, phase: str):
        super().__init__(f"secure aggregation of round {round} aborted in phase {phase}: {reason}")
        self.reason, self.round, self.phase = reason, round, phase


class ShareError(SecAggError):
    """A Shamir share or an encrypted share is malformed, fails authentication (another
    round, another sender or receiver, tampered bytes), or the shares are inconsistent."""


class MessageError(SecAggError):
    """Bytes that do not decode to the protocol message they claim to be."""


class ProtocolError(SecAggError):
    """A message or request out of order or inconsistent with what this party saw: a
    second unmasking request, an unmasking request that lists this client as dropped, a
    message for another round. Refusing it is what keeps both masks of a client secret."""
