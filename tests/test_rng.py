import numpy as np
import pytest

from fedloom.rng import derive_seed, numpy_rng, torch_generator


def test_streams_are_reproducible_and_distinct():
    assert derive_seed(1, "batches", 2, 3) == derive_seed(1, "batches", 2, 3)
    seeds = {
        derive_seed(1, "batches", 2, 3),
        derive_seed(1, "batches", 3, 2),
        derive_seed(1, "sample", 2, 3),
        derive_seed(2, "batches", 2, 3),
    }
    assert len(seeds) == 4
    assert np.array_equal(numpy_rng(5, "x", 1).random(4), numpy_rng(5, "x", 1).random(4))
    import torch

    a = torch.rand(3, generator=torch_generator(5, "x"))
    assert torch.equal(a, torch.rand(3, generator=torch_generator(5, "x")))


def test_negative_keys_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(0, "x", -1)
