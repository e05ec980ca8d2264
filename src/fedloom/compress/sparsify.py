"""Top-k sparsification: send only the ``k`` largest-magnitude values and where they are.

Alone it is biased (the small coordinates are never sent); with error feedback
(:mod:`fedloom.compress.feedback`) what is not sent stays in the client's residual and goes
out in later rounds, which is what makes it converge (Stich, Cordonnier and Jaggi 2018,
"Sparsified SGD with Memory"; Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").

The code: the ``k`` values as float32, and their positions either as a sorted list of
uint32 indices (``4 k`` bytes) or as a bitmap of ``P`` bits (``ceil(P / 8)`` bytes),
whichever is smaller (the bitmap once ``k > P / 32``). Both sizes follow from ``k`` and
``P``, so :meth:`TopK.num_bytes` is exact. The decoder refuses indices out of range,
unsorted or repeated, and a bitmap with other than ``k`` bits set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedloom.client.portable import portable
from fedloom.compress.code import Code, CodeError, as_tensor, check_parts, float_part

__all__ = ["TopK"]

MAX_SIZE = 2**32 - 1  # uint32 indices


@portable("compress/topk")
@dataclass(frozen=True)
class TopK:
    """Keep the ``k`` largest-magnitude values (or ``round(fraction P)``, at least 1, when
    ``k`` is 0).

    >>> top = TopK(k=2)
    >>> code = top.encode(torch.tensor([0.1, -3.0, 0.0, 2.0]))
    >>> code.num_bytes, top.decode(code).tolist()  # 2 x 4 bytes of values + a 1-byte bitmap
    (9, [0.0, -3.0, 0.0, 2.0])
    """

    k: int = 0
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.k < 0:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.k == 0 and not 0 < self.fraction <= 1:
            raise ValueError(f"give k >= 1 or a fraction in (0, 1], got fraction {self.fraction}")
        if self.k and self.fraction:
            raise ValueError(f"give k or fraction, not both (k {self.k}, fraction {self.fraction})")

    @property
    def name(self) -> str:
        return "compress/topk"

    def count(self, size: int) -> int:
        """How many values a code of ``size`` keeps; :class:`ValueError` when ``k > size``."""
        if self.k:
            if self.k > size:
                raise ValueError(f"k = {self.k} is more than the {size} values to compress")
            return self.k
        return min(size, max(1, round(self.fraction * size)))

    def _positions(self, size: int, k: int) -> tuple[str, int]:
        bitmap = (size + 7) // 8
        return ("indices", 4 * k) if 4 * k <= bitmap else ("mask", bitmap)

    def num_bytes(self, size: int) -> int:
        k = self.count(size)
        return self._positions(size, k)[1] + 4 * k

    def encode(self, x: torch.Tensor, *, seed: int = 0) -> Code:
        size = x.numel()
        if size > MAX_SIZE:
            raise ValueError(f"top-k indexes at most {MAX_SIZE} values, got {size}")
        k = self.count(size)
        flat = x.detach().cpu().reshape(-1)
        chosen = torch.topk(flat.abs(), k, sorted=False).indices.sort().values
        values = flat[chosen].double().numpy().astype("<f4").tobytes()
        kind, _ = self._positions(size, k)
        index = chosen.numpy()
        if kind == "indices":
            where = index.astype("<u4").tobytes()
        else:
            mask = np.zeros(size, dtype=np.uint8)
            mask[index] = 1
            where = np.packbits(mask, bitorder="little").tobytes()
        return Code(self.name, size, {kind: where, "values": values})

    def decode(self, code: Code) -> torch.Tensor:
        size = code.size
        try:
            k = self.count(size)
        except ValueError as exc:
            raise CodeError(str(exc)) from None
        kind, length = self._positions(size, k)
        check_parts(code, self.name, size, {kind: length, "values": 4 * k})
        values = float_part(code.parts["values"], what="top-k values")
        if kind == "indices":
            index = np.frombuffer(code.parts["indices"], dtype="<u4").astype(np.int64)
            if k and (index[-1] >= size or (np.diff(index) <= 0).any()):
                raise CodeError("top-k indices out of range, unsorted or repeated")
        else:
            bits = np.unpackbits(np.frombuffer(code.parts["mask"], np.uint8), bitorder="little")
            if bits[size:].any() or int(bits.sum()) != k:
                raise CodeError(f"a top-k bitmap with {int(bits.sum())} bits set, expected {k}")
            index = np.flatnonzero(bits[:size])
        dense = np.zeros(size, dtype=np.float64)
        dense[index] = values
        return as_tensor(dense)
