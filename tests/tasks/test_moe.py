"""Mixture of experts: the gate gives a distribution, the output is the hand-computed
mixture, a personal gate never changes on the server, config errors name their field, and
clustered data transforms each cluster's rows."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedloom.algorithms import fedavg, fedper
from fedloom.algorithms.personal import PERSONAL_VALUES, with_model, with_personal
from fedloom.client import LocalTraining
from fedloom.config import build_algorithm, build_federated, build_model, build_task, load_config
from fedloom.data import IID, apply_clusters, cluster_ids, federate, load_digits
from fedloom.errors import ConfigError
from fedloom.params import param_spec
from fedloom.simulation import initial_module, simulate
from fedloom.tasks import TASKS, MixtureOfExperts
from fedloom.tasks.moe import MoEModel


def _tiny(mix: str) -> MoEModel:
    """Two linear experts on 2 features, 2 classes; a linear gate; known weights."""
    experts = [nn.Linear(2, 2), nn.Linear(2, 2)]
    gate = nn.Linear(2, 2)
    with torch.no_grad():
        experts[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        experts[0].bias.zero_()
        experts[1].weight.copy_(torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
        experts[1].bias.copy_(torch.tensor([1.0, -1.0]))
        gate.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
        gate.bias.zero_()
    return MoEModel(experts, gate, mix=mix)


def test_the_gate_outputs_a_distribution_per_example():
    model = MixtureOfExperts(num_experts=5, expert_hidden=(7, 3), gate_hidden=4).model(6, 3)
    weights = model.gate_weights(torch.randn(11, 6) * 5)
    assert weights.shape == (11, 5)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(11))


def test_the_output_is_the_hand_computed_mixture():
    x = torch.tensor([[1.0, 2.0]])
    # experts: e0 = [1, 2], e1 = [2*2 + 1, 1 - 1] = [5, 0]; gate logits [1, 0]
    g0 = np.exp(1) / (np.exp(1) + 1)
    g = np.array([g0, 1 - g0])
    out = _tiny("logits")(x).detach().numpy()[0]
    np.testing.assert_allclose(out, g[0] * np.array([1, 2]) + g[1] * np.array([5, 0]), rtol=1e-6)
    p0 = np.exp([1, 2]) / np.exp([1, 2]).sum()
    p1 = np.exp([5, 0]) / np.exp([5, 0]).sum()
    out = _tiny("probabilities")(x).detach().numpy()[0]
    np.testing.assert_allclose(out, np.log(g[0] * p0 + g[1] * p1), rtol=1e-6)
    # the log-mixture is already normalized: cross-entropy is -log sum_e g_e p_e(y|x)
    loss = TASKS["mixture_of_experts"]().loss(torch.tensor(out)[None], {"y": torch.tensor([1])})
    np.testing.assert_allclose(loss.item(), -np.log(g[0] * p0[1] + g[1] * p1[1]), rtol=1e-6)


def test_parameter_names_put_the_gate_under_gate():
    model = MixtureOfExperts(num_experts=2, expert_hidden=(), gate_hidden=0).model(3, 2)
    assert param_spec(model).names == (
        "experts.0.1.weight", "experts.0.1.bias", "experts.1.1.weight", "experts.1.1.bias",
        "gate.1.weight", "gate.1.bias",
    )  # fmt: skip


def test_a_personal_gate_is_never_changed_by_the_server():
    digits = load_digits()
    data = apply_clusters(federate(digits, IID(4), holdout_fraction=0.25, seed=0), num_clusters=4)
    setup = MixtureOfExperts(num_experts=2, expert_hidden=(8,), gate_hidden=0)

    def model():
        return setup.model(64, 10)

    algorithm = with_personal(fedavg(), setup.personal_patterns, field="task.gate")
    history = simulate(
        algorithm, data, model, rounds=3, fraction=1.0, seed=0, engine="sequential",
        local=LocalTraining(epochs=1, batch_size=20, lr=0.1), eval_every=3, eval_clients=False,
    )  # fmt: skip
    module = initial_module(model, seed=0)
    mask = with_model(algorithm, module).personal.resolved()
    start = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    state = history.final_state
    assert mask.sum() == 64 * 2 + 2
    torch.testing.assert_close(state.params[mask], start[mask], rtol=0, atol=0)
    assert not torch.equal(state.params[~mask], start[~mask])  # the experts did train
    gates = [state.clients[k][PERSONAL_VALUES] for k in range(4)]
    assert all(not torch.equal(g, start[mask]) for g in gates)  # each client moved its own
    assert not torch.equal(gates[0], gates[1])


def test_with_personal_adds_the_gate_to_an_algorithms_own_patterns():
    assert with_personal(fedavg(), ("gate.*",), field="f").personal.patterns == ("gate.*",)
    assert with_personal(fedper(["x.*"]), ("gate.*",), field="f").personal.patterns == (
        "x.*", "gate.*",
    )  # fmt: skip
    assert with_personal(fedavg(), (), field="f").personal is None  # a shared gate


BASE = ["data.dataset=digits", "data.num_clients=4", "task=mixture_of_experts"]


def test_the_task_section_builds_the_model_and_the_personal_gate():
    config = load_config(None, [*BASE, "task.num_experts=3", "task.expert_hidden=[16,8]",
                                "task.gate_hidden=0", "task.mix=logits"])  # fmt: skip
    data = build_federated(config)
    assert build_task(config, data).name == "mixture_of_experts"
    model = build_model(config, data.dataset)()
    assert isinstance(model, MoEModel) and len(model.experts) == 3 and model.mix == "logits"
    assert [m.out_features for m in model.experts[0] if isinstance(m, nn.Linear)] == [16, 8, 10]
    assert build_algorithm(config).personal.patterns == ("gate.*",)
    assert build_algorithm(config).personal.field == "task.gate"
    shared = load_config(None, [*BASE, "task.gate=shared"])
    assert build_algorithm(shared).personal is None
    ditto = load_config(None, [*BASE, "algorithm=ditto", "algorithm.lam=0.1",
                               "algorithm.personal_epochs=1"])  # fmt: skip
    with pytest.raises(ConfigError, match="task.gate: ditto keeps a whole personal model"):
        build_algorithm(ditto)
    other = load_config(None, [*BASE, "model.name=digits_mlp"])
    with pytest.raises(ConfigError, match="model.name: digits_mlp is not a mixture of experts"):
        build_model(other, data.dataset)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.num_experts=0"], "task.num_experts: Input should be greater than or equal to 1"),
        (
            ["task.expert_hidden=[-3]"],
            r"task.expert_hidden.0: Input should be greater than or equal to 1",
        ),  # fmt: skip
        (["task.gate_hidden=-1"], "task.gate_hidden: Input should be greater than or equal to 0"),
        (["task.gate=global"], "task.gate: Input should be 'personal' or 'shared'"),
    ],
)
def test_bad_options_name_their_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*BASE, *overrides])


def test_bad_options_in_python_name_the_option():
    with pytest.raises(ValueError, match="num_experts must be an integer >= 1, got 0"):
        MixtureOfExperts(num_experts=0)
    with pytest.raises(ValueError, match="expert_hidden must be a list of layer widths >= 1"):
        MixtureOfExperts(expert_hidden=(4, -1))
    with pytest.raises(ValueError, match="gate must be one of personal, shared"):
        MixtureOfExperts(gate="global")  # type: ignore[arg-type]


def test_clusters_rotate_images_and_permute_labels_per_client():
    digits = load_digits()
    data = federate(digits, IID(8), holdout_fraction=0.25, seed=0)
    assert cluster_ids(8, 4).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    rotated = apply_clusters(data, kind="rotate", num_clusters=4)
    for k, turns in ((0, 0), (1, 1), (6, 2), (7, 3)):
        rows = np.concatenate([data.client_train[k], data.client_holdout[k]])
        want = torch.rot90(digits.train_x[rows], k=turns, dims=(-2, -1))
        torch.testing.assert_close(rotated.dataset.train_x[rows], want, rtol=0, atol=0)
    torch.testing.assert_close(rotated.dataset.test_x, digits.test_x)  # test set untouched
    permuted = apply_clusters(data, kind="permute_labels", num_clusters=3, seed=1)
    for k in range(8):
        rows = data.client_train[k]
        before, after = digits.train_y[rows], permuted.dataset.train_y[rows]
        mapping = dict(zip(before.tolist(), after.tolist(), strict=True))
        assert len(set(mapping.values())) == len(mapping)  # a bijection per client
        assert (mapping == {c: c for c in mapping}) == (k % 3 == 0)
    assert dataclasses.replace(permuted, dataset=digits).client_train == data.client_train
    with pytest.raises(ValueError, match="num_clusters must be 1..4 for kind 'rotate'"):
        apply_clusters(data, kind="rotate", num_clusters=5)
    with pytest.raises(ValueError, match="kind must be one of rotate, permute_labels"):
        apply_clusters(data, kind="shuffle")
