"""Compression of updates and broadcasts: quantizers, top-k, error feedback, their codes.

Every compressor maps a flat parameter vector to a :class:`Code` of exactly known size and
back; :class:`Compression` is a run's choice of them in both directions, part of the client
program, so it composes with any algorithm (see :mod:`fedloom.compress.feedback` for where
it runs and what the bytes metrics count, and ``docs/compression.md``).

>>> from fedloom.compress import IntQuantizer
>>> IntQuantizer(bits=8).num_bytes(1000)  # 1000 one-byte codes and one float32 scale
1004
"""

from fedloom.compress.code import Code, CodeError, Compressor
from fedloom.compress.feedback import RESIDUAL, Compression, compress_results, compress_update
from fedloom.compress.quantize import QSGD, BFloat16, Float16, IntQuantizer
from fedloom.compress.sparsify import TopK

__all__ = [
    "QSGD",
    "RESIDUAL",
    "BFloat16",
    "Code",
    "CodeError",
    "Compression",
    "Compressor",
    "Float16",
    "IntQuantizer",
    "TopK",
    "compress_results",
    "compress_update",
]
