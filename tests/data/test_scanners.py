"""Scanners (feature skew): each transform at hand-computed inputs, per-client determinism,
clients differ, and only the owner's rows change."""

import numpy as np
import pytest
import torch

from fedloom.data import Dataset, FederatedDataset, federate
from fedloom.data.partitioners import IID
from fedloom.data.scanners import SCANNER_KINDS, Scanner, apply_scanners, draw_scanners, scan


def _img(values):
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, *np.shape(values))


def test_brightness_contrast_gamma_at_hand_computed_pixels():
    x = _img([[0.0, 0.25], [0.5, 1.0]])
    assert scan("brightness", 0.25, x).flatten().tolist() == [0.25, 0.5, 0.75, 1.0]  # clipped
    assert scan("brightness", -0.5, x).flatten().tolist() == [0.0, 0.0, 0.0, 0.5]
    # 0.5 + 2 (x - 0.5): -0.5 -> 0, 0, 0.5, 1.5 -> 1
    assert scan("contrast", 2.0, x).flatten().tolist() == [0.0, 0.0, 0.5, 1.0]
    assert scan("contrast", 0.5, x).flatten().tolist() == [0.25, 0.375, 0.5, 0.75]
    assert scan("gamma", 2.0, x).flatten().tolist() == [0.0, 0.0625, 0.25, 1.0]
    assert scan("gamma", 0.5, x).flatten().tolist() == pytest.approx([0.0, 0.5, 0.70710678, 1.0])


def test_blur_is_a_mix_with_the_zero_padded_3x3_mean():
    x = _img([[0.0, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 0.0]])
    full = scan("blur", 1.0, x)
    assert full.flatten().tolist() == pytest.approx([0.1] * 9)  # every 3x3 window holds the 0.9
    half = scan("blur", 0.5, x)
    expected = [0.05] * 9
    expected[4] = 0.5 * 0.9 + 0.5 * 0.1
    assert half.flatten().tolist() == pytest.approx(expected)
    corner = scan("blur", 1.0, _img([[0.9, 0.0], [0.0, 0.0]]))
    assert corner.flatten().tolist() == pytest.approx([0.1] * 4)


def test_noise_adds_the_given_draw_scaled_and_clipped():
    x = _img([[0.5, 0.5], [0.0, 1.0]])
    z = _img([[1.0, -1.0], [-1.0, 1.0]])
    assert scan("noise", 0.2, x, z).flatten().tolist() == pytest.approx([0.7, 0.3, 0.0, 1.0])
    with pytest.raises(ValueError, match="noise draw"):
        scan("noise", 0.2, x)


def _toy(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % 4
    return Dataset("toy", x, y, x[:8].clone(), y[:8].clone(), num_classes=4)


def test_draw_is_deterministic_per_client_and_clients_differ():
    a = draw_scanners(10, SCANNER_KINDS, 0.8, seed=3)
    assert a == draw_scanners(10, SCANNER_KINDS, 0.8, seed=3)
    assert a != draw_scanners(10, SCANNER_KINDS, 0.8, seed=4)
    assert [s.kind for s in a] == list(SCANNER_KINDS) * 2
    assert len({s.param for s in a}) == 10
    # client k's scanner does not depend on how many clients there are
    assert draw_scanners(3, SCANNER_KINDS, 0.8, seed=3) == a[:3]
    for s in a:
        bounds = {"brightness": (-0.4, 0.4), "contrast": (1 / 3.4, 3.4), "gamma": (1 / 2.6, 2.6),
                  "blur": (0.4, 0.8), "noise": (0.12, 0.24)}[s.kind]  # fmt: skip
        assert bounds[0] <= s.param <= bounds[1]


def test_apply_changes_only_the_owners_rows_and_keeps_the_test_set():
    data = federate(_toy(), IID(num_clients=4), holdout_fraction=0.25, seed=0)
    scanners = [Scanner("brightness", 0.0), Scanner("contrast", 0.5),
                Scanner("gamma", 1.0), Scanner("noise", 0.1)]  # fmt: skip
    scanned = apply_scanners(data, scanners, seed=0)
    x0, x1 = data.dataset.train_x, scanned.dataset.train_x
    lo, hi = float(x0.min()), float(x0.max())
    for k in range(4):
        rows = np.concatenate([data.client_train[k], data.client_holdout[k]])
        changed = (x0[rows] != x1[rows]).any().item()
        assert changed == (k in (1, 3))  # brightness 0 and gamma 1 are the identity
        if k == 1:
            pixels = (x0[rows] - lo) / (hi - lo)
            expected = (0.5 + 0.5 * (pixels - 0.5)) * (hi - lo) + lo
            torch.testing.assert_close(x1[rows], expected)
    torch.testing.assert_close(scanned.dataset.test_x, data.dataset.test_x)
    assert all(map(np.array_equal, scanned.client_train, data.client_train))
    assert torch.equal(scanned.dataset.train_y, data.dataset.train_y)
    again = apply_scanners(data, scanners, seed=0).dataset.train_x
    assert torch.equal(again, x1)  # the noise is fixed by the seed
    assert not torch.equal(apply_scanners(data, scanners, seed=1).dataset.train_x, x1)


def test_rows_no_client_owns_are_untouched():
    dataset = _toy()
    # rows 20.. belong to nobody (as a non-exhaustive partition such as RareClass leaves them)
    train = (np.arange(0, 8), np.arange(10, 18))
    holdout = (np.arange(8, 10), np.arange(18, 20))
    data = FederatedDataset(dataset, train, holdout)
    scanned = apply_scanners(data, [Scanner("brightness", 0.3)] * 2, seed=0)
    assert torch.equal(scanned.dataset.train_x[20:], dataset.train_x[20:])
    assert not torch.equal(scanned.dataset.train_x[:20], dataset.train_x[:20])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kinds": []}, "kinds"),
        ({"kinds": ["sepia"]}, "kinds.*sepia"),
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
    ],
)
def test_bad_draws_name_the_field(kwargs, match):
    options = {"kinds": ["blur"], "strength": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        draw_scanners(4, options["kinds"], options["strength"], seed=0)


def test_one_scanner_per_client():
    data = federate(_toy(), IID(num_clients=4), seed=0)
    with pytest.raises(ValueError, match="3 scanners for 4 clients"):
        apply_scanners(data, [Scanner("blur", 0.5)] * 3, seed=0)
    with pytest.raises(ValueError, match="unknown scanner kind"):
        Scanner("sepia", 1.0)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.scanners.strength=0", "data.scanners.strength: Input should be greater than 0"),
        ("data.scanners.strength=2", "data.scanners.strength: Input should be less than or equal"),
        ("data.scanners.kinds=[]", "data.scanners.kinds: List should have at least 1 item"),
        ("data.scanners.kinds=[sepia]", "data.scanners.kinds.0: Input should be 'brightness'"),
        ("data.scanners.lens=1", "data.scanners.lens: unknown key; allowed keys here: kinds"),
    ],
)
def test_bad_scanner_config_names_the_field(override, expected):
    from fedloom.config import load_config
    from fedloom.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert len(info.value.problems) == 1
    assert expected in info.value.problems[0]


def test_scanners_from_config_transform_owned_rows_and_refuse_flat_inputs():
    from fedloom.config import load_config
    from fedloom.config.data import build_federated_data
    from fedloom.errors import ConfigError

    plain = build_federated_data(load_config(None, ["data.num_clients=5"]).data, seed=2)
    config = load_config(None, ["data.num_clients=5", "data.scanners.strength=0.8"])
    assert config.data.scanners is not None and len(config.data.scanners.kinds) == 5
    skewed = build_federated_data(config.data, seed=2)
    assert all(map(np.array_equal, skewed.client_train, plain.client_train))  # same split
    assert torch.equal(skewed.dataset.test_x, plain.dataset.test_x)  # the test set stays clean
    for k in range(5):
        rows = torch.from_numpy(skewed.client_train[k])
        assert not torch.equal(skewed.dataset.train_x[rows], plain.dataset.train_x[rows])
    again = build_federated_data(config.data, seed=2)
    assert torch.equal(again.dataset.train_x, skewed.dataset.train_x)
    flat = load_config(None, ["data.dataset=synthetic", "data.num_clients=5", "data.scanners={}"])
    with pytest.raises(ConfigError, match=r"data.scanners: need image inputs"):
        build_federated_data(flat.data, seed=0)


def test_digits_cnn_in_has_instance_norm_and_no_buffers():
    from fedloom.models import MODELS, digits_cnn, digits_cnn_in

    module = digits_cnn_in()
    assert sum(p.numel() for p in module.parameters()) == 17_290
    assert list(module.buffers()) == []  # no running statistics: trains vectorized
    assert (
        isinstance(module[1], torch.nn.InstanceNorm2d) and MODELS["digits_cnn_in"] is digits_cnn_in
    )
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    raw = module[0](x)
    feature = module[1](raw)  # each image's channels: mean 0, variance 1 (affine = id)
    assert feature.mean(dim=(2, 3)).abs().max() < 1e-5
    # exactly var / (var + eps): eps = 1e-5 keeps near-constant maps from dividing by zero
    raw_var = raw.var(dim=(2, 3), unbiased=False)
    expected = raw_var / (raw_var + module[1].eps)
    assert torch.allclose(feature.var(dim=(2, 3), unbiased=False), expected, atol=1e-4)
    assert module(x).shape == digits_cnn()(x).shape == (3, 10)
