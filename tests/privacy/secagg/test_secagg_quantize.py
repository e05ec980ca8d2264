"""Fixed-point quantization: endpoints, unbiased stochastic rounding, the decode offset for a
sum of n clients, and the group size that keeps that sum from wrapping."""

import numpy as np
import pytest

from fedloom.errors import ConfigError
from fedloom.privacy.secagg import (
    Quantizer,
    SecAggConfig,
    SecAggError,
    max_value_bits,
    min_group_bits,
)


def test_endpoints_clip_and_decode_exactly():
    q = Quantizer(clip_range=2.0, value_bits=8)
    x = np.array([-5.0, -2.0, 0.0, 2.0, 7.0])
    ints = q.quantize(x, rng=np.random.default_rng(0))
    assert ints.dtype == np.uint64
    assert ints[[0, 1, 3, 4]].tolist() == [0, 0, 255, 255]  # clipped to [-c, c]
    assert q.dequantize_sum(ints, num_clients=1)[[0, 1, 3, 4]].tolist() == [-2.0, -2.0, 2.0, 2.0]
    assert q.step == pytest.approx(4.0 / 255)


def test_stochastic_rounding_is_unbiased():
    """The mean of 200,000 roundings of values between grid points is the value itself
    (within 5 standard errors; the rounding's std is at most step / 2), while rounding to
    the nearest grid point would miss by up to step / 2."""
    q = Quantizer(clip_range=1.0, value_bits=3)  # a coarse grid: step = 2/7
    values = np.array([-0.93, -0.4, 0.0, 0.05, 0.31, 0.77])
    repeats = 200_000
    ints = q.quantize(np.tile(values, repeats), rng=np.random.default_rng(7))
    decoded = q.dequantize_sum(ints, num_clients=1).reshape(repeats, -1)
    tolerance = 5 * (q.step / 2) / np.sqrt(repeats)
    np.testing.assert_allclose(decoded.mean(axis=0), values, atol=tolerance)
    nearest = np.round((values + 1.0) / q.step) * q.step - 1.0
    assert np.abs(nearest - values).max() > 50 * tolerance  # a biased rounding would fail
    assert set(np.unique(ints)) <= set(range(8))


def test_sum_of_n_clients_decodes_with_the_offset():
    q = Quantizer(clip_range=0.5, value_bits=12)
    rng = np.random.default_rng(1)
    updates = rng.uniform(-0.5, 0.5, size=(20, 1000))
    total = sum(q.quantize(u, rng=rng) for u in updates)
    decoded = q.dequantize_sum(total, num_clients=20)
    assert np.abs(decoded - updates.sum(axis=0)).max() < q.error_bound(20)


def test_min_group_bits_prevents_overflow():
    """20 clients at +c with 16-bit values sum to 20 * 65535, which needs 21 bits: in
    Z_{2^21} it decodes to 20 c exactly, in Z_{2^20} it wraps and decodes to garbage."""
    n, value_bits = 20, 16
    assert min_group_bits(n, value_bits) == 21
    q = Quantizer(clip_range=1.0, value_bits=value_bits)
    total = sum(q.quantize(np.full(4, 1.0), rng=np.random.default_rng(c)) for c in range(n))
    for bits, fits in ((21, True), (20, False)):
        wrapped = total & np.uint64((1 << bits) - 1)
        decoded = q.dequantize_sum(wrapped, num_clients=n)
        assert np.allclose(decoded, 20.0) is fits
    with pytest.raises(ConfigError, match=r"secure_aggregation\.bits = 20 is too few.*21 bits"):
        SecAggConfig(bits=20, value_bits=16).for_cohort(20)
    assert SecAggConfig(bits=21, value_bits=16).for_cohort(20).quantizer.value_bits == 16


def test_max_value_bits_is_the_finest_precision_that_fits():
    assert max_value_bits(32, 20) == 27
    assert min_group_bits(20, 27) <= 32 < min_group_bits(20, 28)
    assert max_value_bits(4, 20) == 0
    with pytest.raises(ConfigError, match="too few for a cohort of 20"):
        SecAggConfig(bits=4).for_cohort(20)


def test_non_finite_updates_are_refused():
    q = Quantizer(clip_range=1.0, value_bits=8)
    with pytest.raises(SecAggError, match="2 non-finite coordinates.*index 1"):
        q.quantize(np.array([0.0, np.nan, np.inf]), rng=np.random.default_rng(0))


@pytest.mark.parametrize("clip_range", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_clip_range_is_a_config_error(clip_range):
    with pytest.raises(ConfigError, match="clip_range"):
        Quantizer(clip_range=clip_range, value_bits=8)
