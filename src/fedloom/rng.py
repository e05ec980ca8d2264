"""Every random stream in fedloom is derived from (seed, purpose, round, client id).

Deriving instead of sharing one global generator makes a client's randomness independent of
which executor trains it, in which order, in which process, and of whether the run was resumed.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "numpy_rng", "torch_generator"]


def _purpose_key(purpose: str) -> int:
    return zlib.crc32(purpose.encode("utf-8"))


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for one purpose (e.g. ``"sample"``, ``"batches"``) and integer keys.

    >>> derive_seed(0, "batches", 3, 7) == derive_seed(0, "batches", 3, 7)
    True
    """
    entropy = [int(seed), _purpose_key(purpose), *(int(k) for k in keys)]
    if any(e < 0 for e in entropy):
        raise ValueError(f"seeds and keys must be non-negative, got {entropy}")
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A NumPy generator for one purpose and keys."""
    return np.random.default_rng(derive_seed(seed, purpose, *keys))


def torch_generator(seed: int, purpose: str, *keys: int) -> torch.Generator:
    """A CPU torch generator for one purpose and keys."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, purpose, *keys))
    return generator
