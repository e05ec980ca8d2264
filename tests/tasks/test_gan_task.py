"""The GAN task: its losses match their formulas at hand-computed logits, each training phase
lets only its player learn, and the YAML task section builds it with errors naming the field."""

import math

import pytest
import torch

from fedloom.config import build_federated, build_model, build_task, load_config
from fedloom.errors import ConfigError
from fedloom.tasks.gan import Gan, GanModel, discriminator_loss, gan_loss, generator_loss

LOGITS = torch.tensor([0.0, 2.0, -1.0])
# hand-computed: softplus(0) = log 2 = 0.693147, softplus(2) = log(1 + e^2) = 2.126928,
# softplus(-2) = 0.126928, softplus(1) = 1.313262, softplus(-1) = 0.313262
SP = {0.0: 0.693147, 2.0: 2.126928, -2.0: 0.126928, 1.0: 1.313262, -1.0: 0.313262}


def test_discriminator_loss_is_bce_real_one_plus_bce_fake_zero():
    real, fake = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([0.0, -1.0, 2.0])
    # BCE(real, 1) = softplus(-real); BCE(fake, 0) = softplus(fake)
    expected = [SP[0.0] + SP[0.0], SP[-2.0] + SP[-1.0], SP[1.0] + SP[2.0]]
    assert discriminator_loss(real, fake).tolist() == pytest.approx(expected, abs=1e-5)
    assert float(discriminator_loss(torch.tensor(0.0), torch.tensor(0.0))) == pytest.approx(
        math.log(4), abs=1e-6
    )


def test_generator_losses_minimax_and_non_saturating():
    # minimax: log(1 - sigma(l)) = -softplus(l); at l = 2: log(1 - 0.880797) = -2.126928
    assert generator_loss(LOGITS, "minimax").tolist() == pytest.approx(
        [-SP[0.0], -SP[2.0], -SP[-1.0]], abs=1e-5
    )
    assert float(generator_loss(torch.tensor(2.0), "minimax")) == pytest.approx(
        math.log(1 - 1 / (1 + math.exp(-2))), abs=1e-5
    )
    # non-saturating: -log sigma(l) = softplus(-l); at l = -1: -log(0.268941) = 1.313262
    assert generator_loss(LOGITS, "non_saturating").tolist() == pytest.approx(
        [SP[0.0], SP[-2.0], SP[1.0]], abs=1e-5
    )
    with pytest.raises(ValueError, match="kind must be minimax or non_saturating"):
        generator_loss(LOGITS, "wasserstein")


def test_the_task_loss_switches_to_the_generator_loss_on_the_phase_flag():
    outputs = torch.tensor([[2.0, -1.0, 0.0], [2.0, -1.0, 1.0]])
    loss = gan_loss(outputs, {"x": torch.zeros(2, 4), "y": torch.zeros(2)})
    assert loss.tolist() == pytest.approx([SP[-2.0] + SP[-1.0], SP[-2.0] + SP[1.0]], abs=1e-5)


def _grads(model: GanModel, x: torch.Tensor) -> dict[str, float]:
    torch.manual_seed(0)
    loss = gan_loss(model(x), {"x": x}).mean()
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in model.named_parameters()])
    return {n: float(g.abs().sum()) for n, g in zip(names, grads, strict=True)}


def test_each_phase_lets_only_its_player_learn_and_minimax_reverses_the_generator():
    torch.manual_seed(1)
    model = Gan(latent=4, hidden=8, disc_hidden=8).model(num_features=16)
    x = torch.rand(6, 1, 4, 4)
    d_phase, g_phase = model.training_phases()
    for name, g in _grads(d_phase, x).items():
        assert (g > 0) == name.startswith("discriminator"), name
    for name, g in _grads(g_phase, x).items():
        assert (g > 0) == name.startswith("generator"), name
    # minimax: the generator's gradient of L_D is minus that of the minimax L_G
    both = model.with_phase("both")
    torch.manual_seed(0)
    out = both(x)
    g_params = list(both.generator.parameters())
    reversed_grad = torch.autograd.grad(gan_loss(out, {"x": x}).mean(), g_params)
    torch.manual_seed(0)
    fake = both.discriminator(both.generator(torch.randn(6, 4)))[:, 0]
    direct = torch.autograd.grad(generator_loss(fake, "minimax").mean(), g_params)
    for a, b in zip(reversed_grad, direct, strict=True):
        torch.testing.assert_close(a, b)


BASE = ["task=gan", "data.num_clients=4", "data.partition=iid"]


def test_the_task_section_builds_the_model():
    config = load_config(None, [*BASE, "task.latent=5", "task.hidden=7", "task.mode=minimax"])
    data = build_federated(config)
    assert build_task(config, data).name == "gan"
    model = build_model(config, data.dataset)()
    assert isinstance(model, GanModel) and model.latent == 5 and model.mode == "minimax"
    assert model.generator[0].in_features == 5 and model.generator[0].out_features == 7
    assert model.training_phases() == ()
    with pytest.raises(
        ConfigError, match="model.name: digits_mlp .*task gan leave model.name auto"
    ):
        build_model(load_config(None, [*BASE, "model.name=digits_mlp"]), data.dataset)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.latent=0"], "task.latent: Input should be greater than or equal to 1"),
        (["task.disc_hidden=-3"], "task.disc_hidden: Input should be greater than or equal to 1"),
        (["task.mode=wgan"], "task.mode: Input should be 'alternating' or 'minimax'"),
    ],
)
def test_bad_options_name_their_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*BASE, *overrides])


def test_python_settings_reject_bad_values_naming_them():
    with pytest.raises(ValueError, match="latent must be an integer >= 1, got 0"):
        Gan(latent=0)
    with pytest.raises(ValueError, match="mode must be one of alternating, minimax"):
        Gan(mode="wgan")  # type: ignore[arg-type]
