"""FedProx, SCAFFOLD, FedNova, FedOpt and q-FFL against small hand-computed cases."""

import math

import pytest
import torch
from torch import nn

import fedloom as fl
from fedloom.algorithms import (
    fedadagrad,
    fedadam,
    fedavgm,
    fednova,
    fedprox,
    fedyogi,
    prepare_plans,
    qffl,
    scaffold,
    server_init,
    server_update,
)
from fedloom.client import (
    ClientProgram,
    LocalContext,
    LocalTraining,
    ProximalTerm,
    local_init,
    local_step,
    make_objective,
    work_norm,
)
from fedloom.params import buffer_spec, param_spec
from fedloom.types import ClientPlan, ClientResult


def _result(client_id, update, *, n=10, steps=1, **statistics):
    return ClientResult(
        client_id=client_id,
        update=torch.tensor(update, dtype=torch.float32),
        buffers=torch.zeros(0),
        num_examples=n,
        num_steps=steps,
        num_example_passes=steps * n,
        train_loss=0.0,
        statistics=statistics,
    )


def _step(algorithm, results, params=(0.0, 0.0), *, state=None, **kwargs):
    params = torch.tensor(params)
    state = state or server_init(algorithm, params, torch.zeros(0))
    return server_update(algorithm, state, results, **kwargs)


# --- FedProx -------------------------------------------------------------------------------


def test_proximal_term_value_and_gradient():
    w_t = torch.tensor([1.0, -2.0, 0.5])
    w = torch.tensor([2.0, 0.0, 0.5], requires_grad=True)
    value = ProximalTerm(0.5)(w, LocalContext(w_t))
    assert value.item() == pytest.approx(0.25 * (1 + 4))  # mu/2 * ||w - w_t||^2
    (grad,) = torch.autograd.grad(value, w)
    assert torch.allclose(grad, torch.tensor([0.5, 1.0, 0.0]))  # mu * (w - w_t)
    with pytest.raises(ValueError, match="mu must be >= 0"):
        ProximalTerm(-1.0)


def test_fedprox_local_step_adds_mu_times_distance_to_the_global_model():
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    spec = param_spec(module)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    w_t = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    w = w_t + 0.1  # a local iterate away from the broadcast model
    settings = LocalTraining(lr=0.5, batch_size=None)
    plain = make_objective(module, spec, buffer_spec(module))
    prox = make_objective(module, spec, buffer_spec(module), terms=fedprox(0.3).program.terms)
    context = LocalContext(w_t)
    start = local_init(w, torch.zeros(0), settings)
    step_plain = local_step(
        start, {"x": x, "y": y}, objective=plain, settings=settings, context=context
    )
    step_prox = local_step(
        start, {"x": x, "y": y}, objective=prox, settings=settings, context=context
    )
    # the extra movement is -lr * mu * (w - w_t) = -0.5 * 0.3 * 0.1 on every coordinate
    assert torch.allclose(step_prox.params - step_plain.params, torch.full_like(w, -0.015))


# --- FedNova -------------------------------------------------------------------------------


def _brute_force_work_norm(tau, momentum=0.0, alpha=0.0):
    """Run the local recursion with unit 'gradients' kept apart and add up their weights."""
    # w_{s+1} = w_s - lr (v_s), v_s = rho v_{s-1} + g_s + alpha/lr * (w_s - w_0); with lr = 1
    weights = torch.zeros(tau)
    position = torch.zeros(tau)  # coefficient of each g_j in w_s - w_0
    velocity = torch.zeros(tau)
    for s in range(tau):
        g = torch.zeros(tau)
        g[s] = 1.0
        velocity = momentum * velocity + g + alpha * position
        position = position - velocity
    weights = -position
    return float(weights.sum())


@pytest.mark.parametrize("tau", [1, 2, 5, 17])
def test_work_norm_matches_the_local_recursion(tau):
    assert work_norm(tau) == tau
    assert work_norm(tau, momentum=0.9) == pytest.approx(_brute_force_work_norm(tau, 0.9))
    assert work_norm(tau, lr=0.5, mu=0.2) == pytest.approx(_brute_force_work_norm(tau, 0, 0.1))
    with pytest.raises(ValueError, match="not both"):
        work_norm(tau, momentum=0.5, lr=0.1, mu=1.0)


def test_fednova_normalizes_by_work_and_rescales_by_tau_eff():
    # two clients, n = 10 and 30, with 2 and 8 local steps
    results = [
        _result(0, [2.0, 0.0], n=10, steps=2, work_norm=2.0),
        _result(1, [0.0, 8.0], n=30, steps=8, work_norm=8.0),
    ]
    state = _step(fednova(), results)
    # p = (1/4, 3/4); d = (1, 0) and (0, 1); tau_eff = 2/4 + 24/4 = 6.5
    assert torch.allclose(state.params, torch.tensor([6.5 * 0.25, 6.5 * 0.75]))
    fedavg_state = _step(fl.fedavg(), results)
    assert torch.allclose(fedavg_state.params, torch.tensor([0.5, 6.0]))


def test_fednova_with_equal_work_is_fedavg():
    results = [
        _result(0, [1.0, -1.0], n=5, steps=3, work_norm=3.0),
        _result(1, [4.0, 2.0], n=15, steps=3, work_norm=3.0),
    ]
    assert torch.allclose(_step(fednova(), results).params, _step(fl.fedavg(), results).params)


def test_fednova_without_work_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="work_norm"):
        _step(fednova(), [_result(0, [1.0, 1.0])])


# --- SCAFFOLD ------------------------------------------------------------------------------


def test_scaffold_control_variates_option_two_by_hand():
    algorithm = scaffold()
    settings = LocalTraining(lr=0.5, steps=2)
    state0 = server_init(algorithm, torch.zeros(2), torch.zeros(0))
    plans = prepare_plans(algorithm, state0, [ClientPlan(3, 0, 0), ClientPlan(7, 0, 0)])
    assert all(torch.equal(p.correction, torch.zeros(2)) for p in plans)
    results = [_result(3, [1.0, 0.0], steps=2), _result(7, [0.0, -2.0], steps=4)]
    state1 = server_update(algorithm, state0, results, settings=settings, num_clients=10)
    # x += uniform mean of the updates
    assert torch.allclose(state1.params, torch.tensor([0.5, -1.0]))
    # c_k+ = c_k - c - u_k / (K lr): client 3: -(1, 0)/1; client 7: -(0, -2)/2
    assert torch.allclose(state1.clients[3]["scaffold/c"], torch.tensor([-1.0, 0.0]))
    assert torch.allclose(state1.clients[7]["scaffold/c"], torch.tensor([0.0, 1.0]))
    # c += (1/N) sum of the changes = ((-1, 0) + (0, 1)) / 10
    assert torch.allclose(state1.algorithm, torch.tensor([-0.1, 0.1]))
    # next round: client 3 corrects by c - c_3; an unseen client by c - 0
    plans = prepare_plans(algorithm, state1, [ClientPlan(3, 1, 0), ClientPlan(5, 1, 0)])
    assert torch.allclose(plans[0].correction, torch.tensor([0.9, 0.1]))
    assert torch.allclose(plans[1].correction, torch.tensor([-0.1, 0.1]))
    # a client that skips a round keeps its variate
    state2 = server_update(
        algorithm, state1, [_result(3, [0.0, 0.0], steps=2)], settings=settings, num_clients=10
    )
    assert torch.equal(state2.clients[7]["scaffold/c"], state1.clients[7]["scaffold/c"])
    # the round's writes went into a new store value; the old state is untouched
    assert set(state0.clients) == set() and set(state1.clients) == {3, 7}


def _quadratic_lab(num_clients=4, dim=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    curvatures = 0.5 + 2.0 * torch.rand(num_clients, dim, generator=generator)
    centers = 3.0 * torch.randn(num_clients, dim, generator=generator)
    return curvatures, centers


def _run_quadratic(algorithm, settings, rounds, *, work=None, sizes=None, seed=0):
    curvatures, centers = _quadratic_lab(seed=seed)
    sizes = sizes or [1] * len(curvatures)
    executor = fl.sim.QuadraticExecutor(
        curvatures, centers, sizes, settings, program=algorithm.client_program()
    )
    history = fl.engine.run_rounds(
        algorithm,
        executor,
        num_clients=len(curvatures),
        params=torch.zeros(curvatures.shape[1]),
        buffers=torch.zeros(0),
        rounds=rounds,
        fraction=1.0,
        settings=settings,
        work=work,
        seed=seed,
    )
    weights = fl.aggregate.client_weights(
        [_result(k, [0.0], n=n) for k, n in enumerate(sizes)], algorithm.weighting
    )
    distance = float((history.final_state.params.double() - executor.optimum(weights)).norm())
    return distance, history


def test_scaffold_removes_client_drift_on_heterogeneous_quadratics():
    """With different client Hessians, FedAvg's many local steps stop at the wrong point;
    SCAFFOLD's corrected steps converge to the global optimum (Karimireddy et al. 2020)."""
    settings = LocalTraining(lr=0.1, steps=10)
    fedavg_distance, _ = _run_quadratic(fl.fedavg(weighting="uniform"), settings, 150)
    scaffold_distance, _ = _run_quadratic(scaffold(), settings, 150)
    assert fedavg_distance > 0.1
    assert scaffold_distance < 1e-4


# --- server optimizers ---------------------------------------------------------------------


def test_fedavgm_momentum_by_hand():
    algorithm = fedavgm(server_lr=0.5, momentum=0.9)
    state = _step(algorithm, [_result(0, [1.0, 2.0])])
    assert torch.allclose(state.params, torch.tensor([0.5, 1.0]))  # v = D
    state = _step(algorithm, [_result(0, [1.0, 0.0])], state=state)
    # v = 0.9 * (1, 2) + (1, 0) = (1.9, 1.8); w += 0.5 v
    assert torch.allclose(state.params, torch.tensor([0.5 + 0.95, 1.0 + 0.9]))


@pytest.mark.parametrize(
    ("factory", "second_moment"),
    [
        (fedadagrad, lambda v, d2: v + d2),
        (fedadam, lambda v, d2: 0.99 * v + 0.01 * d2),
        (fedyogi, lambda v, d2: v - 0.01 * d2 * math.copysign(1.0, v - d2) if v != d2 else v),
    ],
)
def test_adaptive_server_optimizers_two_steps_by_hand(factory, second_moment):
    tau, lr, b1 = 1e-3, 0.1, 0.9
    algorithm = factory(server_lr=lr, tau=tau)
    deltas = [0.5, -0.2]
    state = None
    m, v, w = 0.0, tau * tau, 0.0
    for d in deltas:
        state = _step(algorithm, [_result(0, [d])], params=(0.0,), state=state)
        m = b1 * m + (1 - b1) * d
        v = second_moment(v, d * d)
        w = w + lr * m / (math.sqrt(v) + tau)
        assert state.params.item() == pytest.approx(w, rel=1e-5)


def test_server_optimizer_arguments_are_checked():
    with pytest.raises(ValueError, match="beta2 must be in"):
        fedadam(beta2=1.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        fedyogi(tau=0.0)


# --- q-FFL ---------------------------------------------------------------------------------


def test_qffl_with_q_zero_is_fedavg():
    results = [
        _result(0, [1.0, -1.0], n=5, initial_loss=0.3),
        _result(1, [4.0, 2.0], n=15, initial_loss=2.0),
    ]
    settings = LocalTraining(lr=0.1)
    assert torch.allclose(
        _step(qffl(0.0), results, settings=settings).params,
        _step(fl.fedavg(), results).params,
        atol=1e-6,
    )


def test_qffl_step_by_hand():
    """Li et al. 2020, Algorithm 2 with q = 1, L = 1/lr = 10, uniform weights."""
    results = [
        _result(0, [0.1, 0.0], initial_loss=0.5),
        _result(1, [0.0, -0.2], initial_loss=2.0),
    ]
    state = _step(qffl(1.0, weighting="uniform"), results, settings=LocalTraining(lr=0.1))
    big_l = 10.0
    delta_w = [[-1.0, 0.0], [0.0, 2.0]]  # L (w_t - w_k)
    f = [0.5, 2.0]
    deltas = [[f[k] * x for x in delta_w[k]] for k in range(2)]
    h = [1 * 1 * sum(x * x for x in delta_w[k]) + big_l * f[k] for k in range(2)]
    expected = [-(deltas[0][i] + deltas[1][i]) / (h[0] + h[1]) for i in range(2)]
    assert state.params.tolist() == pytest.approx(expected, rel=1e-5)


def test_qffl_without_initial_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="initial_loss"):
        _step(qffl(1.0), [_result(0, [1.0, 1.0])])


# --- weighting -----------------------------------------------------------------------------


def test_inverse_variance_weighting_by_hand_and_its_errors():
    results = [
        _result(0, [1.0], update_variance=0.5),
        _result(1, [4.0], update_variance=2.0),
    ]
    weights = fl.aggregate.client_weights(results, "inverse_variance")
    assert weights.tolist() == pytest.approx([0.8, 0.2])  # 1/0.5 : 1/2 = 4 : 1
    with pytest.raises(ValueError, match="update_variance.*client 0.*1 steps"):
        fl.aggregate.client_weights(
            [_result(0, [1.0], update_variance=math.nan)], "inverse_variance"
        )
    algorithm = fl.fedavg(weighting="inverse_variance")
    assert "update_variance" in algorithm.client_program().statistics


def test_gradient_noise_by_hand():
    # gradients (1, 0), (3, 0), (2, 3) over 3 steps of 4 examples, P = 2, n = 12
    grads = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]], dtype=torch.float64)
    spread = float(((grads - grads.mean(0)) ** 2).sum() / 2)  # = (2 + 6) / 2 = 4
    noise = fl.client.gradient_noise(
        grads.sum(0),
        grads.pow(2).sum(),
        num_steps=3,
        num_example_passes=12,
        num_examples=12,
    )
    assert noise == pytest.approx(spread * 4 / 2 / 12)
    assert math.isnan(
        fl.client.gradient_noise(grads[0], 1.0, num_steps=1, num_example_passes=4, num_examples=12)
    )


def test_client_program_rejects_unknown_statistics():
    with pytest.raises(ValueError, match="unknown client statistics"):
        ClientProgram(statistics=frozenset({"gradient_norm"}))


def test_inverse_variance_over_weights_a_small_uniform_client(digits):
    """The documented trap: one small client holding a single label has almost no gradient
    noise, so inverse-variance weighting hands it far more than its share of examples."""
    import numpy as np

    from fedloom.data import federate
    from fedloom.engine import plans_for_round
    from fedloom.params import flatten_params
    from fedloom.sim import SequentialExecutor
    from fedloom.simulation import initial_module

    labels = digits.train_y.numpy()
    zeros = np.flatnonzero(labels == 0)
    small = zeros[:20]
    rest = np.setdiff1d(np.arange(len(labels)), small)
    rng = np.random.default_rng(0)
    rest = rng.permutation(rest)
    parts = [small, rest[: len(rest) // 2], rest[len(rest) // 2 :]]
    data = federate(digits, parts, holdout_fraction=0.0, seed=0)
    module = initial_module(fl.models.digits_mlp, seed=0)
    algorithm = fl.fedavg(weighting="inverse_variance")
    local = LocalTraining(epochs=1, batch_size=5, lr=0.1)
    executor = SequentialExecutor(module, data, local, program=algorithm.client_program())
    params = flatten_params(module)
    plans = plans_for_round(3, 1.0, seed=0, round=0)
    results = executor.fit(
        plans, params, {k: torch.zeros(0) for k in range(3)}, LocalContext(params)
    )
    by_examples = fl.aggregate.client_weights(results, "examples")
    by_variance = fl.aggregate.client_weights(results, "inverse_variance")
    small_position = [r.client_id for r in results].index(0)
    assert by_examples[small_position] < 0.02
    # measured: 1.4% of the examples, 4.3% of the weight (3x its share)
    assert by_variance[small_position] > 2.5 * by_examples[small_position]
