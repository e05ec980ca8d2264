"""scikit-learn's bundled ``digits`` (1,797 real 8x8 handwritten digits): offline and small.

It is the default dataset of ``fedloom run`` because it needs no download and trains in
seconds on two cores while still being real handwriting.
"""

from __future__ import annotations

import numpy as np
import torch

from fedloom.data.dataset import Dataset

__all__ = ["load_digits"]

# The train/test split is fixed (not the run's seed) so that test accuracies are comparable
# across runs and seeds.
_SPLIT_SEED = 20170217


def load_digits(test_fraction: float = 0.2) -> Dataset:
    """Digits as float32 images ``[N, 1, 8, 8]`` in [0, 1] with a fixed stratified split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = bunch.data.astype(np.float32).reshape(-1, 1, 8, 8) / 16.0
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    test_idx = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test_idx.append(members[: round(len(members) * test_fraction)])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    return Dataset(
        name="digits",
        train_x=torch.from_numpy(x[~test_mask]),
        train_y=torch.from_numpy(y[~test_mask]),
        test_x=torch.from_numpy(x[test_mask]),
        test_y=torch.from_numpy(y[test_mask]),
        num_classes=10,
    )
