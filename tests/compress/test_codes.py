"""Compressors: round-trip error bounds, QSGD's unbiasedness and variance bound, code sizes
against hand-computed byte counts, and decoders that refuse codes they did not write."""

import math

import numpy as np
import pytest
import torch

from fedloom.compress import QSGD, BFloat16, Code, CodeError, Float16, IntQuantizer, TopK


def _vector(size=1000, seed=0):
    """Values spread over six orders of magnitude, both signs, and a few exact zeros."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size) * 10.0 ** rng.uniform(-4, 2, size)
    x[:3] = 0.0
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize(
    ("compressor", "size", "expected"),
    [
        (Float16(), 1000, 2000),
        (BFloat16(), 1000, 2000),
        (IntQuantizer(bits=8), 1000, 1000 + 4),  # one byte a value, one float32 scale
        (IntQuantizer(bits=4, block_size=64), 1000, 500 + 4 * 16),  # ceil(1000/64) = 16 scales
        (IntQuantizer(bits=2), 1001, 251 + 4),  # ceil(2002 / 8) = 251
        (QSGD(levels=1), 1000, 250 + 4),  # sign + 1 level bit
        (QSGD(levels=15), 1000, 625 + 4),  # 1 + ceil(log2 16) = 5 bits
        (QSGD(levels=16, block_size=100), 1000, 750 + 40),  # 1 + ceil(log2 17) = 6 bits
        (TopK(k=10), 1000, 40 + 40),  # uint32 indices + float32 values
        (TopK(k=100), 1000, 125 + 400),  # a bitmap (125 bytes) beats 400 bytes of indices
        (TopK(fraction=0.01), 1000, 40 + 40),
    ],
)
def test_codes_have_the_hand_computed_size(compressor, size, expected):
    assert compressor.num_bytes(size) == expected
    code = compressor.encode(_vector(size), seed=3)
    assert code.num_bytes == expected
    assert compressor.decode(code).shape == (size,)


def test_fp16_error_is_within_half_an_ulp_and_clamps_to_its_range():
    x = torch.cat([_vector(), torch.tensor([1e5, -1e6, 3e-8])])
    decoded = Float16().decode(Float16().encode(x))
    clamped = x.double().clamp(-65504, 65504)
    error = (decoded.double() - clamped).abs()
    bound = torch.maximum(clamped.abs() * 2.0**-11, torch.full_like(clamped, 2.0**-25))
    assert (error <= bound).all()
    assert decoded[-3:-1].tolist() == [65504.0, -65504.0]


def test_bf16_error_is_within_its_8_bit_mantissa():
    x = _vector(seed=1)
    decoded = BFloat16().decode(BFloat16().encode(x))
    assert ((decoded.double() - x.double()).abs() <= x.double().abs() * 2.0**-8).all()
    assert (decoded != x).any()  # it did round


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("block_size", [0, 64])
def test_int_error_is_at_most_half_a_step_of_its_block(bits, block_size):
    x = _vector(seed=2)
    q = IntQuantizer(bits=bits, block_size=block_size)
    decoded = q.decode(q.encode(x)).double()
    width = block_size or x.numel()
    rows = -(-x.numel() // width)
    padded = torch.zeros(rows * width, dtype=torch.float64)
    padded[: x.numel()] = x.double()
    step = padded.view(rows, width).abs().amax(1) / q.top  # s = max |x| / m per block
    per_value = step.repeat_interleave(width)[: x.numel()]
    error = (decoded - x.double()).abs()
    assert (error <= per_value / 2 + x.double().abs() * 2.0**-24).all()
    assert error.max() > per_value.min() / 100  # the bound is not vacuous: it does quantize


def test_qsgd_is_unbiased_within_its_variance_bound():
    """Mean of N draws: each coordinate of Q_s(v) has variance at most ||v||^2 / (4 s^2)
    (a two-point distribution on adjacent levels ||v|| l / s, ||v|| (l + 1) / s), so the
    mean's error is at most 5 standard deviations ||v|| / (2 s sqrt(N)) (for 64 coordinates
    a Gaussian tail of 64 x 6e-7). The mean squared error obeys Lemma 3.1 of Alistarh et
    al. 2017: E ||Q(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2."""
    v = _vector(64, seed=5)
    s, draws = 2, 4000
    q = QSGD(levels=s)
    samples = torch.stack([q.decode(q.encode(v, seed=seed)) for seed in range(draws)]).double()
    norm = float(v.double().norm())
    tolerance = 5 * norm / (2 * s * math.sqrt(draws))
    assert (samples.mean(0) - v.double()).abs().max() <= tolerance
    mse = float(((samples - v.double()) ** 2).sum(1).mean())
    d = v.numel()
    assert mse <= 1.05 * min(d / s**2, math.sqrt(d) / s) * norm**2
    assert mse > 0  # it is stochastic
    assert torch.equal(q.decode(q.encode(v, seed=9)), q.decode(q.encode(v, seed=9)))


def test_qsgd_buckets_are_unbiased_too():
    v = _vector(40, seed=6)
    q = QSGD(levels=1, block_size=8)
    samples = torch.stack([q.decode(q.encode(v, seed=seed)) for seed in range(3000)]).double()
    norms = v.double().view(5, 8).norm(dim=1).repeat_interleave(8)
    assert ((samples.mean(0) - v.double()).abs() <= 5 * norms / (2 * math.sqrt(3000))).all()


def test_topk_keeps_the_largest_values_exactly():
    x = torch.tensor([0.5, -4.0, 0.0, 3.0, -0.25, 1.0])
    top = TopK(k=3)
    assert top.decode(top.encode(x)).tolist() == [0.0, -4.0, 0.0, 3.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="k = 7 is more than the 6 values"):
        TopK(k=7).encode(x)


def _code(compressor, x):
    return compressor.encode(x, seed=0)


@pytest.mark.parametrize(
    ("compressor", "part", "forge", "message"),
    [
        (IntQuantizer(), "scales", lambda b: np.float32(np.nan).tobytes(), "non-finite"),
        (IntQuantizer(), "scales", lambda b: np.float32(-1).tobytes(), "negative"),
        (IntQuantizer(), "codes", lambda b: b"\xff" + b[1:], "int code above 254"),
        (IntQuantizer(), "codes", lambda b: b[:-1], "expected 100"),
        (QSGD(levels=2), "codes", lambda b: b"\xff" + b[1:], "level above 2"),
        (TopK(k=2), "indices", lambda b: b[4:] + b[:4], "unsorted"),
        (TopK(k=2), "indices", lambda b: np.array([1, 100], "<u4").tobytes(), "out of range"),
        (TopK(k=2), "values", lambda b: np.array([1, np.inf], "<f4").tobytes(), "non-finite"),
        (Float16(), "values", lambda b: np.array([np.inf] * 100, "<f2").tobytes(), "non-finite"),
    ],
)
def test_decoders_refuse_codes_they_did_not_write(compressor, part, forge, message):
    code = _code(compressor, torch.arange(1.0, 101.0))
    forged = Code(code.kind, code.size, {**code.parts, part: forge(code.parts[part])})
    with pytest.raises(CodeError, match=message):
        compressor.decode(forged)


def test_a_bitmap_with_the_wrong_count_and_a_foreign_code_are_refused():
    top = TopK(k=20)  # 4 k > ceil(64 / 8): a bitmap
    code = top.encode(torch.arange(64.0))
    assert set(code.parts) == {"mask", "values"}
    mask = bytearray(code.parts["mask"])
    mask[0] ^= 1
    with pytest.raises(CodeError, match="bits set"):
        top.decode(Code(code.kind, code.size, {**code.parts, "mask": bytes(mask)}))
    with pytest.raises(CodeError, match="expected 'compress/topk'"):
        top.decode(Float16().encode(torch.arange(64.0)))


@pytest.mark.parametrize(
    "compressor",
    [Float16(), BFloat16(), IntQuantizer(bits=4, block_size=16), QSGD(levels=5, block_size=16),
     TopK(k=3), TopK(k=40)],
    ids=["fp16", "bf16", "int4", "qsgd", "topk-indices", "topk-bitmap"],
)  # fmt: skip
def test_random_bytes_of_the_right_lengths_decode_to_finite_values_or_are_refused(compressor):
    """What a peer can send: any bytes. The decoder returns a finite [P] vector or raises
    CodeError, never anything else."""
    rng = np.random.default_rng(1)
    template = compressor.encode(torch.arange(100.0), seed=0)
    outcomes = set()
    for _ in range(300):
        parts = {k: rng.bytes(len(v)) for k, v in template.parts.items()}
        try:
            decoded = compressor.decode(Code(template.kind, 100, parts))
        except CodeError:
            outcomes.add("refused")
            continue
        assert decoded.shape == (100,) and torch.isfinite(decoded).all()
        outcomes.add("decoded")
    assert "refused" in outcomes
