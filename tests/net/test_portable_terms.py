"""A user's own objective term and a per-client correction reach a deployed client over a
real gRPC server as data, and the client trains exactly the objective the simulation does."""

from dataclasses import dataclass

import pytest
import torch

from _deployed import one_deployed_round
from fedloom.client import (
    ClientProgram,
    LocalContext,
    LocalTraining,
    ProximalTerm,
    make_objective,
    train_client,
)
from fedloom.client.portable import portable
from fedloom.params import buffer_spec, flatten_buffers, flatten_params, param_spec
from fedloom.types import ClientPlan


@portable("test/pull-toward")
@dataclass(frozen=True)
class PullToward:
    """``strength/2 ||w - target||^2``: a term only this test module defines."""

    strength: float
    target: torch.Tensor

    def __call__(self, w, context):
        return 0.5 * self.strength * (w - self.target).pow(2).sum()


def test_a_users_term_and_a_correction_train_the_same_update_deployed_and_simulated():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    params, buffers = flatten_params(module), flatten_buffers(module)
    x, y = torch.randn(12, 3), torch.randint(0, 2, (12,))
    program = ClientProgram(
        terms=(PullToward(0.3, torch.randn(params.numel())), ProximalTerm(0.2)),
        statistics=frozenset({"work_norm"}),
    )
    settings = LocalTraining(epochs=2, batch_size=4, lr=0.1)
    plan = ClientPlan(0, 0, seed=123, correction=torch.randn(params.numel()))
    deployed = one_deployed_round(
        plan, params, buffers, settings=settings, program=program,
        data={"x": x, "y": y}, module=module,
    )  # fmt: skip
    objective = make_objective(module, param_spec(module), buffer_spec(module), terms=program.terms)
    simulated = train_client(
        plan, {"x": x, "y": y}, params, buffers, objective=objective, settings=settings,
        context=LocalContext(params), program=program,
    )  # fmt: skip
    assert torch.equal(deployed.update, simulated.update)
    assert deployed.train_loss == simulated.train_loss
    # FedNova's ||a||_1 with the proximal mu that crossed: (1 - (1 - lr mu)^tau) / (lr mu)
    assert deployed.statistics["work_norm"] == pytest.approx((1 - 0.98**6) / 0.02, rel=1e-12)
    without = train_client(
        ClientPlan(0, 0, seed=123), {"x": x, "y": y}, params, buffers, objective=objective,
        settings=settings, context=LocalContext(params), program=program,
    )  # fmt: skip
    assert not torch.allclose(deployed.update, without.update)  # the correction did cross
