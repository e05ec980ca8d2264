"""Ditto: lambda = 0 is independent local training, a large lambda keeps v_k near w_t, the
global model is FedAvg's bit for bit, resume keeps v_k, every engine agrees, evaluation uses
v_k, config and deployment."""

import math

import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.algorithms.ditto import ditto
from fedloom.algorithms.personal import PERSONAL_MODEL
from fedloom.data import Dirichlet, federate
from fedloom.engine import Checkpoints
from fedloom.errors import ConfigError
from fedloom.params import flatten_params
from fedloom.rng import derive_seed
from fedloom.simulation import initial_module
from fedloom.types import ClientPlan

LOCAL = fl.LocalTraining(epochs=1, batch_size=20, lr=0.1)


def _linear():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _data(digits, clients=4):
    return federate(digits, Dirichlet(clients, 0.5), seed=0)


def _run(
    algorithm, data, engine="sequential", rounds=2, checkpoint=None, fraction=1.0, local=LOCAL
):
    return fl.simulate(
        algorithm, data, _linear, rounds=rounds, fraction=fraction, local=local, seed=1,
        engine=engine, checkpoint=checkpoint, workers=2,
    )  # fmt: skip


def test_lambda_zero_is_independent_local_training(digits):
    """With lambda = 0 each v_k is just 3 SGD steps per round on the client's own data,
    chained from round to round, whatever the global model does."""
    data = _data(digits)
    state = _run(ditto(0.0, personal_steps=3), data, rounds=2).final_state
    module = initial_module(_linear, seed=1)
    w0 = flatten_params(module)
    plain = fl.sim.SequentialExecutor(
        module, data, fl.LocalTraining(steps=3, batch_size=20, lr=0.1)
    )
    context = fl.client.LocalContext(global_params=w0)
    for client_id in range(4):
        v = w0
        for t in range(2):
            plan_seed = derive_seed(1, "client", t, client_id)  # the round's plan's seed
            seed = derive_seed(plan_seed, "ditto-personal")
            plan = ClientPlan(client_id, t, seed, start=v)
            (result,) = plain.fit(
                [plan], torch.zeros_like(w0), {client_id: torch.zeros(0)}, context
            )
            v = result.update  # the final parameters (update = final - 0)
        assert torch.allclose(state.clients[client_id][PERSONAL_MODEL], v, rtol=0, atol=1e-6)
        assert not torch.allclose(v, w0, atol=1e-3)  # it did move


def test_a_large_lambda_keeps_the_personal_model_near_the_received_global_model(digits):
    """One SGD step maps d = v - w_t to (1 - lr lam) d - lr g; the gradient of softmax
    regression's cross-entropy has norm <= sqrt(2) sqrt(||x||^2 + 1) (||p - y|| <= sqrt(2)),
    so after any number of steps ||v - w_t|| <= lr G / (1 - |1 - lr lam|). With lr = 0.1 and
    lam = 8 that is G / 8; with lam = 0 the personal model goes much further."""
    data = _data(digits)
    w0 = flatten_params(initial_module(_linear, seed=1))
    x_max = float(digits.train_x.reshape(len(digits.train_x), -1).norm(dim=1).max())
    bound = 0.1 * math.sqrt(2) * math.sqrt(x_max**2 + 1) / (1 - abs(1 - 0.1 * 8.0))
    tight = _run(ditto(8.0, personal_epochs=3), data, rounds=1).final_state
    free = _run(ditto(0.0, personal_epochs=3), data, rounds=1).final_state
    for client_id in range(4):
        near = float((tight.clients[client_id][PERSONAL_MODEL] - w0).norm())
        far = float((free.clients[client_id][PERSONAL_MODEL] - w0).norm())
        assert near <= bound
        assert far > 2 * near


def test_the_global_model_is_fedavgs_bit_for_bit(digits):
    data = _data(digits, clients=6)
    ours = _run(ditto(0.5, personal_steps=4), data, rounds=3, fraction=0.5).final_state
    theirs = _run(fl.fedavg(), data, rounds=3, fraction=0.5).final_state
    assert torch.equal(ours.params, theirs.params)


def test_resume_keeps_the_personal_models(digits, tmp_path):
    data = _data(digits, clients=6)
    algorithm = ditto(0.5, personal_steps=3)
    whole = _run(algorithm, data, rounds=4, fraction=0.5).final_state
    _run(algorithm, data, rounds=2, fraction=0.5, checkpoint=Checkpoints(tmp_path))
    state = _run(
        algorithm, data, rounds=4, fraction=0.5, checkpoint=Checkpoints(tmp_path)
    ).final_state
    assert torch.equal(state.params, whole.params)
    assert sorted(state.clients) == sorted(whole.clients)
    for client_id, entries in whole.clients.items():
        assert torch.equal(state.clients[client_id][PERSONAL_MODEL], entries[PERSONAL_MODEL])


@pytest.mark.parametrize("engine", ["vectorized", "process"])
def test_engines_equal_sequential(digits, engine):
    data = _data(digits, clients=6)
    local = fl.LocalTraining(epochs=1, batch_size=10, lr=0.1, momentum=0.5)
    algorithm = ditto(0.3, personal_steps=5)
    reference = _run(algorithm, data, rounds=2, fraction=0.5, local=local).final_state
    other = _run(algorithm, data, engine=engine, rounds=2, fraction=0.5, local=local).final_state
    assert torch.allclose(other.params, reference.params, rtol=0, atol=1e-5)
    assert sorted(other.clients) == sorted(reference.clients)
    for client_id, entries in reference.clients.items():
        theirs = other.clients[client_id][PERSONAL_MODEL]
        assert torch.allclose(theirs, entries[PERSONAL_MODEL], rtol=0, atol=1e-5)


def test_the_personalized_scores_evaluate_the_personal_models(digits):
    """Every client took part, so client_personal_accuracy_mean is the mean accuracy of the
    v_k on the clients' held-out splits, computed here by hand."""
    data = _data(digits)
    history = _run(ditto(0.0, personal_steps=20), data, rounds=1)
    metrics = history.reports[-1].metrics
    state = history.final_state
    evaluator = fl.engine.Evaluator(initial_module(_linear, seed=1), data)
    own = {k: state.clients[k][PERSONAL_MODEL] for k in range(4)}
    by_hand = evaluator.client_metrics(state.params, state.buffers, {}, own, prefix="mine")
    assert metrics["client_personal_accuracy_mean"] == pytest.approx(by_hand["mine_accuracy_mean"])
    assert metrics["client_personal_accuracy_mean"] != metrics["client_accuracy_mean"]


def test_bad_input_names_the_field():
    with pytest.raises(ConfigError, match="lam"):
        ditto(-1.0, personal_steps=1)
    with pytest.raises(ConfigError, match="exactly one of personal_steps and personal_epochs"):
        ditto(0.1)
    with pytest.raises(ConfigError, match="personal_steps"):
        ditto(0.1, personal_steps=0)


def test_ditto_from_yaml_and_the_deployed_server_refuses_server_side_state(tmp_path, capsys):
    from fedloom.cli import main
    from fedloom.config import load_config
    from fedloom.experiment import simulate_config

    yaml = ["rounds=1", "data.dataset=digits", "data.num_clients=4", "server.fraction=0.5",
            "algorithm={name: ditto, lam: 0.1, personal_steps: 2}"]  # fmt: skip
    metrics = simulate_config(load_config(None, yaml)).reports[-1].metrics
    assert "client_personal_accuracy_mean" in metrics
    code = main(["server", "--insecure", "--runs-dir", str(tmp_path / "runs"),
                 "--set", "algorithm={name: ditto, lam: 0.1, personal_steps: 2}",
                 "--set", "deploy.client_state=server"])  # fmt: skip
    assert code == 2
    assert "deploy.client_state: ditto keeps personal parameters" in capsys.readouterr().err


def test_finetuned_scores_by_hand(digits):
    """finetune_steps=2 with full-batch SGD: each client's fine-tuned model is two gradient
    steps of the mean cross-entropy on its own training split from the final global model,
    computed here with autograd, then scored on its held-out split."""
    data = _data(digits)
    local = fl.LocalTraining(epochs=1, batch_size=None, lr=0.5)
    history = fl.simulate(
        fl.fedavg(), data, _linear, rounds=1, fraction=1.0, local=local, seed=1,
        engine="sequential", finetune_steps=2,
    )  # fmt: skip
    metrics, w = history.reports[-1].metrics, history.final_state.params
    tuned = {}
    for client_id in range(4):
        x, y = data.client_data(client_id)
        v = w.clone()
        for _ in range(2):
            v = v.detach().requires_grad_(True)
            weight, bias = v[:640].view(10, 64), v[640:]
            loss = nn.functional.cross_entropy(x.reshape(len(x), -1) @ weight.T + bias, y)
            (grad,) = torch.autograd.grad(loss, v)
            v = v.detach() - 0.5 * grad
        tuned[client_id] = v
    evaluator = fl.engine.Evaluator(initial_module(_linear, seed=1), data)
    by_hand = evaluator.client_metrics(w, torch.zeros(0), {}, tuned, prefix="mine")
    assert metrics["client_finetuned_accuracy_mean"] == pytest.approx(by_hand["mine_accuracy_mean"])
    assert metrics["client_finetuned_accuracy_mean"] != metrics["client_accuracy_mean"]
    with pytest.raises(ValueError, match="finetune_steps"):
        fl.simulate(fl.fedavg(), data, _linear, rounds=1, finetune_steps=-1)


def test_finetuned_scores_from_yaml():
    from fedloom.config import load_config
    from fedloom.experiment import simulate_config

    yaml = ["rounds=1", "data.dataset=digits", "data.num_clients=4", "eval.finetune_steps=2"]
    metrics = simulate_config(load_config(None, yaml)).reports[-1].metrics
    assert "client_finetuned_accuracy_mean" in metrics
    with pytest.raises(ConfigError, match="finetune_steps"):
        load_config(None, [*yaml, "eval.finetune_steps=-1"])


def test_the_summary_shows_the_finetuned_spread(digits):
    from rich.console import Console

    from fedloom.report.console import summary_table

    data = _data(digits)
    history = fl.simulate(fl.fedavg(), data, _linear, rounds=1, fraction=0.5, finetune_steps=2)
    console = Console(width=120, record=True)
    console.print(summary_table(history, title="t", run_dir=None, elapsed_s=1.0))
    text = console.export_text()
    assert f"{history.reports[-1].metrics['client_finetuned_accuracy_mean']:.4f}" in text
    assert "fine-tuned client accuracy mean" in text
