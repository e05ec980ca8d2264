"""Compression of a run, in both directions, and error feedback.

:class:`Compression` says what a client does to its update before it leaves (``upload``,
after the program's update transforms such as local DP's noise), whether it keeps what the
compressor dropped for the next round (``error_feedback``), and how the server's broadcast
of the global model is compressed (``download``). It is part of the client program
(:class:`~fedloom.client.ClientProgram`), so it composes with any algorithm.

Error feedback (Seide et al. 2014; Stich, Cordonnier and Jaggi 2018; Karimireddy et al.
2019): client ``k`` keeps a residual ``e_k`` (zero at first), compresses ``v = u + e_k``
instead of its update ``u``, sends the code ``C(v)`` and keeps ``e_k' = v - decode(C(v))``.
So after any number of rounds, ``sum_t decode(C(v_t)) + e_k = sum_t u_t``: nothing is lost,
only delayed. The arithmetic is float64 and the residual is stored as float64, so this
identity holds to float64 rounding (exactly, for updates whose sums float64 represents).
The residual lives in the client-state store under ``"compress/residual"``
(:mod:`fedloom.client.store`): the server's store in simulation, the client's own
(:class:`~fedloom.client.store.OwnState`) in deployment, so it never leaves the client there.

Where it runs: a deployed client compresses on its own device and the server decodes what
arrives (``fedloom.net``); in simulation the round loop does the same on the client's behalf
with :func:`compress_results`, before validation, with the client's seed for the round and
its residual from the store, so both send the same code for the same update. The bytes a run
counts (``bytes_up``, ``bytes_down``) are the lengths of the codes sent.

The download direction compresses the global parameters ``w_t`` deterministically (fp16,
bf16, int); clients train from the decoded ``w^_t``, their update is relative to it, and the
server adds the aggregate to its own full-precision ``w_t``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from fedloom.client.store import ClientStates, client_state
from fedloom.compress.code import Code, Compressor
from fedloom.compress.quantize import BFloat16, Float16, IntQuantizer
from fedloom.types import ClientResult

__all__ = [
    "RESIDUAL",
    "Compression",
    "compress_results",
    "compress_update",
]

RESIDUAL = "compress/residual"
"""The client-state store entry of a client's error-feedback residual (float64, ``[P]``)."""

DOWNLOAD_KINDS = (Float16, BFloat16, IntQuantizer)
BYTES_PER_VALUE = 4  # float32, uncompressed


@dataclass(frozen=True)
class Compression:
    """A run's compression: ``upload`` (client -> server, ``None``: float32),
    ``error_feedback`` (needs ``upload``) and ``download`` (server -> client broadcast,
    deterministic kinds only; ``None``: float32).

    >>> from fedloom.compress import TopK
    >>> c = Compression(upload=TopK(k=10), error_feedback=True)
    >>> c.upload_bytes(1000), c.download_bytes(1000)  # 10 values + 10 indices; float32
    (80, 4000)
    """

    upload: Compressor | None = None
    download: Compressor | None = None
    error_feedback: bool = False

    def __post_init__(self) -> None:
        if self.error_feedback and self.upload is None:
            raise ValueError("error feedback needs an upload compressor")
        if self.download is not None and not isinstance(self.download, DOWNLOAD_KINDS):
            raise ValueError(
                f"the broadcast can be compressed with fp16, bf16 or int, not "
                f"{self.download.name}: every client must decode the same model"
            )

    def upload_bytes(self, size: int) -> int:
        """The bytes of one client's update of ``size`` values, as sent."""
        return self.upload.num_bytes(size) if self.upload else BYTES_PER_VALUE * size

    def download_bytes(self, size: int) -> int:
        """The bytes of the broadcast model of ``size`` values, as sent to one client."""
        return self.download.num_bytes(size) if self.download else BYTES_PER_VALUE * size

    def broadcast(self, params: torch.Tensor) -> torch.Tensor:
        """The global parameters as the clients decode them (``params`` without a download
        compressor)."""
        if self.download is None:
            return params
        return self.download.decode(self.download.encode(params, seed=0))


def compress_update(
    update: torch.Tensor,
    residual: torch.Tensor | None,
    compression: Compression,
    *,
    seed: int,
) -> tuple[Code, torch.Tensor, torch.Tensor | None]:
    """One client's upload: ``(the code sent, its decoded float32 vector, the new residual)``.

    With error feedback the code is of ``update + residual`` (a missing residual is zero)
    and the new residual is what the code missed (float64); without, the residual is
    ``None``. ``seed`` is the client's seed for the round (QSGD's rounding).
    """
    compressor = compression.upload
    if compressor is None:
        raise ValueError("no upload compressor")
    target = update.double()
    if compression.error_feedback and residual is not None:
        target = target + residual.double()
    code = compressor.encode(target, seed=seed)
    decoded = compressor.decode(code)
    new_residual = target - decoded.double() if compression.error_feedback else None
    return code, decoded, new_residual


def compress_results(
    compression: Compression,
    results: Sequence[ClientResult],
    seeds: Mapping[int, int],
    clients: ClientStates,
) -> tuple[list[ClientResult], dict[int, dict[str, torch.Tensor]], int]:
    """The round loop's side of compression in simulation: every result's update as the
    server decodes it, the clients' new residuals (store writes, by client id) and the bytes
    of the updates sent. ``seeds`` are the clients' seeds for the round. An update with
    non-finite values is left as it is for validation to reject (counted at the code's size).
    """
    compressed: list[ClientResult] = []
    writes: dict[int, dict[str, torch.Tensor]] = {}
    sent = 0
    for result in results:
        size = result.update.numel()
        if not bool(torch.isfinite(result.update).all()):
            compressed.append(result)
            sent += compression.upload_bytes(size)
            continue
        residual = client_state(clients, result.client_id, RESIDUAL)
        code, decoded, new_residual = compress_update(
            result.update, residual, compression, seed=seeds[result.client_id]
        )
        sent += code.num_bytes
        compressed.append(replace(result, update=decoded))
        if new_residual is not None:
            writes[result.client_id] = {RESIDUAL: new_residual}
    return compressed, writes, sent
