"""FedDyn (Acar et al. 2021) against a hand-computed round and the paper's consistency claim."""

import pytest
import torch

import fedloom as fl
from fedloom.algorithms import prepare_plans, server_init, server_update
from fedloom.algorithms.feddyn import LINEAR_TERM, feddyn
from fedloom.client import LocalTraining
from fedloom.config import build_algorithm, load_config
from fedloom.types import ClientPlan, ClientResult


def _result(client_id, update, steps=2):
    u = torch.tensor(update)
    return ClientResult(client_id, u, torch.zeros(0), 10, steps, 10 * steps, 0.0)


def test_feddyn_server_and_client_state_by_hand():
    """alpha = 0.5, N = 10, clients 3 and 7 send u_3 = (1, 0), u_7 = (0, -2).

    mean u = (0.5, -1); h = 0 - 0.5 * 2/10 * (0.5, -1) = (-0.05, 0.1);
    w_1 = w_0 + mean u - h / alpha = (0.6, -1.2); g_3 = -0.5 u_3, g_7 = -0.5 u_7."""
    algorithm = feddyn(0.5)
    settings = LocalTraining(lr=0.1, steps=2)
    state0 = server_init(algorithm, torch.zeros(2), torch.zeros(0))
    plans = prepare_plans(algorithm, state0, [ClientPlan(3, 0, 0), ClientPlan(7, 0, 0)])
    assert all(p.correction is None for p in plans)  # g_k = 0 before a client's first round
    results = [_result(3, [1.0, 0.0]), _result(7, [0.0, -2.0])]
    state1 = server_update(algorithm, state0, results, settings=settings, num_clients=10)
    assert state1.params.tolist() == pytest.approx([0.6, -1.2])
    assert state1.aggregation["server"][0].tolist() == pytest.approx([-0.05, 0.1])  # h
    assert state1.clients[3][LINEAR_TERM].tolist() == pytest.approx([-0.5, 0.0])
    assert state1.clients[7][LINEAR_TERM].tolist() == pytest.approx([0.0, 1.0])
    # the next round sends -g_k as the gradient correction: grad L - g_k + alpha (w - w_t)
    plans = prepare_plans(algorithm, state1, [ClientPlan(3, 1, 0), ClientPlan(5, 1, 0)])
    assert plans[0].correction.tolist() == pytest.approx([0.5, 0.0])
    assert plans[1].correction is None
    assert algorithm.program.proximal_mu == 0.5


def _quadratic_distance(algorithm, settings, rounds):
    generator = torch.Generator().manual_seed(0)
    curvatures = 0.5 + 2.0 * torch.rand(4, 3, generator=generator)
    centers = 3.0 * torch.randn(4, 3, generator=generator)
    executor = fl.sim.QuadraticExecutor(
        curvatures, centers, [1] * 4, settings, program=algorithm.client_program()
    )
    history = fl.engine.run_rounds(
        algorithm, executor, num_clients=4, params=torch.zeros(3), buffers=torch.zeros(0),
        rounds=rounds, fraction=1.0, settings=settings,
    )  # fmt: skip
    optimum = executor.optimum(torch.ones(4))
    return float((history.final_state.params.double() - optimum).norm())


def test_feddyn_reaches_the_global_optimum_where_fedavg_drifts():
    """On heterogeneous quadratics with 10 local steps, FedAvg stops away from the optimum of
    the average objective; FedDyn's dynamic regularizer makes the fixed point the global
    optimum (Acar et al. 2021, Section 3)."""
    settings = LocalTraining(lr=0.1, steps=10)
    assert _quadratic_distance(fl.fedavg(weighting="uniform"), settings, 200) > 0.1
    assert _quadratic_distance(feddyn(0.1), settings, 200) < 1e-3


def test_feddyn_is_registered_with_its_alpha_validated():
    config = load_config(None, ["algorithm=feddyn", "algorithm.alpha=0.1"])
    assert build_algorithm(config).name == "feddyn" and config.server.weighting == "uniform"
    with pytest.raises(fl.ConfigError, match=r"algorithm.alpha: Input should be greater than 0"):
        load_config(None, ["algorithm=feddyn", "algorithm.alpha=0"])
