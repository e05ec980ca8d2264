import pytest
import torch
from torch import nn

from fedloom import models
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, load_flat, param_spec


@pytest.mark.parametrize(
    ("factory", "expected"),
    [(models.mnist_2nn, 199_210), (models.mnist_cnn, 1_663_370), (models.digits_mlp, 4_810)],
)
def test_paper_parameter_counts(factory, expected):
    assert param_spec(factory()).num_params == expected


def test_views_round_trip_and_share_storage():
    module = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    flat = flatten_params(module)
    spec = param_spec(module)
    assert spec.offsets == (0, 6, 8, 10)
    views = spec.views(flat)
    assert torch.equal(views["0.weight"], module[0].weight)
    views["1.bias"].fill_(7.0)  # a view, not a copy
    assert flat[-1] == 7.0
    assert torch.equal(spec.flatten(dict(module.named_parameters())), flatten_params(module))


def test_views_of_a_stacked_cohort_keep_the_leading_dimension():
    module = nn.Linear(4, 3)
    spec = param_spec(module)
    cohort = torch.randn(5, spec.num_params)
    assert spec.views(cohort)["weight"].shape == (5, 3, 4)


def test_wrong_length_names_the_sizes():
    spec = param_spec(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="has 14 entries but the spec describes 15"):
        spec.views(torch.zeros(14))


def test_buffers_exclude_integer_bookkeeping():
    module = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    spec = buffer_spec(module)
    assert spec.names == ("1.running_mean", "1.running_var")
    assert flatten_buffers(module).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_load_flat_writes_params_and_buffers():
    module = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))
    params = torch.arange(param_spec(module).num_params, dtype=torch.float32)
    buffers = torch.full((8,), 3.0)
    load_flat(module, params, buffers)
    assert torch.equal(flatten_params(module), params)
    assert torch.equal(module[1].running_var, torch.full((4,), 3.0))
