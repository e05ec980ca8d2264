"""Clients with quadratic objectives, trained exactly: a laboratory for client drift.

Client ``k`` minimizes ``F_k(w) = 1/2 sum_i a_ki (w_i - b_ki)^2`` by full-batch gradient
descent (with the shared momentum and learning rate, the plan's number of steps and
SCAFFOLD's correction). The global objective ``sum_k p_k F_k`` has the closed-form optimum
``w*_i = sum_k p_k a_ki b_ki / sum_k p_k a_ki``, so how far an algorithm's fixed point lies
from it (objective inconsistency, drift) is measured exactly, without sampling noise. It
implements the :class:`~fedloom.engine.Executor` protocol, so the real round loop, work
assignment and server update run on it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fedloom.client import ClientProgram, LocalContext, LocalTraining, work_norm
from fedloom.client.alternation import trainable
from fedloom.client.optim import sgd_step
from fedloom.types import ClientFailure, ClientPlan, ClientResult

__all__ = ["QuadraticExecutor"]


class QuadraticExecutor:
    """Exact local gradient descent on ``F_k(w) = 1/2 sum a_k (w - b_k)^2``.

    Args:
        curvatures: ``[K, P]`` positive diagonal Hessians ``a_k``.
        centers: ``[K, P]`` client optima ``b_k``.
        sizes: ``n_k``, reported as each client's number of examples (example weighting).
        settings: learning rate, momentum, and the default number of steps (``steps``, or
            ``epochs`` counted as steps: every step is one full-batch step).
        program: statistics to report (``initial_loss``, ``work_norm``; proximal terms are
            applied in closed form), and FedRep's alternation (its head steps come first).
        client_steps: each client's own number of local steps when the plan does not say
            (a device property: fast and slow devices), instead of the shared settings.
    """

    def __init__(
        self,
        curvatures: torch.Tensor,
        centers: torch.Tensor,
        sizes: Sequence[int],
        settings: LocalTraining,
        *,
        program: ClientProgram | None = None,
        client_steps: Sequence[int] | None = None,
    ):
        if client_steps is not None and len(client_steps) != len(curvatures):
            raise ValueError("need one entry of client_steps per client")
        self.client_steps = list(client_steps) if client_steps is not None else None
        if curvatures.shape != centers.shape or curvatures.dim() != 2:
            raise ValueError("curvatures and centers must both be [clients, parameters]")
        if len(sizes) != len(curvatures) or torch.any(curvatures <= 0):
            raise ValueError("need one size per client and positive curvatures")
        self.curvatures = curvatures.double()
        self.centers = centers.double()
        self.sizes = list(sizes)
        self.settings = settings
        self.program = program or ClientProgram()
        unsupported = set(self.program.statistics) - {"initial_loss", "work_norm"}
        if unsupported:
            raise ValueError(f"QuadraticExecutor cannot report {sorted(unsupported)}")

    def optimum(self, weights: torch.Tensor) -> torch.Tensor:
        """The minimizer of ``sum_k weights_k F_k``."""
        w = weights.double()[:, None]
        return (w * self.curvatures * self.centers).sum(0) / (w * self.curvatures).sum(0)

    def loss(self, client: int, w: torch.Tensor) -> float:
        a, b = self.curvatures[client], self.centers[client]
        return float(0.5 * (a * (w.double() - b).pow(2)).sum())

    def fit(
        self,
        plans: Sequence[ClientPlan],
        params: torch.Tensor,
        buffers: Mapping[int, torch.Tensor],
        context: LocalContext,
    ) -> list[ClientResult | ClientFailure]:
        settings, mu = self.settings, self.program.proximal_mu
        results: list[ClientResult | ClientFailure] = []
        for plan in plans:
            k = plan.client_id
            a, b = self.curvatures[k], self.centers[k]
            default = self.client_steps[k] if self.client_steps else None
            steps = plan.steps or plan.epochs or default or settings.steps or settings.epochs
            start = plan.start if plan.start is not None else params  # personal values
            w = start.double().clone()
            velocity = torch.zeros_like(w) if settings.momentum else None
            correction = None if plan.correction is None else plan.correction.double()
            alternation = self.program.alternation  # FedRep: head steps first (a step an epoch)
            head = 0 if alternation is None else alternation.head_steps or alternation.head_epochs
            for step in range(head + steps):
                grad = a * (w - b) + mu * (w - params.double())
                before = (w, velocity)
                w, velocity = sgd_step(
                    w,
                    grad,
                    velocity,
                    lr=settings.lr,
                    momentum=settings.momentum,
                    weight_decay=settings.weight_decay,
                    correction=correction,
                )
                if alternation is not None:  # the frozen phase keeps its weights and momentum
                    moving = trainable(alternation, step, head)
                    w = torch.where(moving, w, before[0])
                    if velocity is not None and before[1] is not None:
                        velocity = torch.where(moving, velocity, before[1])
            steps += head
            statistics: dict[str, float] = {}
            if "initial_loss" in self.program.statistics:
                statistics["initial_loss"] = self.loss(k, start)
            if "work_norm" in self.program.statistics:
                statistics["work_norm"] = work_norm(
                    steps, momentum=settings.momentum, lr=settings.lr, mu=mu
                )
            results.append(
                ClientResult(
                    client_id=k,
                    update=self.program.transform_update(
                        (w - params.double()).to(params.dtype), seed=plan.seed
                    ),
                    buffers=torch.zeros(0),
                    num_examples=self.sizes[k],
                    num_steps=steps,
                    num_example_passes=steps * self.sizes[k],
                    train_loss=self.loss(k, w),
                    statistics=statistics,
                )
            )
        return results
