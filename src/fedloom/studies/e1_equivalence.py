"""FedAvg with one local step per round is synchronous data-parallel SGD.

Each sampled client takes one step of B examples from the broadcast model; the server
averages the updates with uniform weights (every worker's batch counts the same, as in
data-parallel SGD with equal per-worker batches). The result is one SGD step on the union of
the m batches, the same as data-parallel training of an ordinary PyTorch module with
``torch.optim.SGD`` on those batches. With server momentum (FedAvgM, ``server_lr = 1``) it is
data-parallel SGD with heavy-ball momentum. The study runs both on the real ``digits`` data
and reports the largest parameter difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedloom.algorithms import Algorithm, fedavg, fedavgm
from fedloom.client import LocalTraining, batch_schedule
from fedloom.data import IID, FederatedDataset, federate, load_digits
from fedloom.engine import plans_for_round
from fedloom.models import digits_mlp
from fedloom.params import flatten_params
from fedloom.simulation import initial_module, simulate
from fedloom.studies._results import write_results

__all__ = ["data_parallel_sgd", "run"]

NUM_CLIENTS, FRACTION, BATCH, LR = 20, 0.25, 10, 0.1


def data_parallel_sgd(
    data: FederatedDataset, *, rounds: int, seed: int, momentum: float = 0.0
) -> torch.Tensor:
    """Plain PyTorch: per round, the sampled workers' batches form one global batch."""
    module = initial_module(digits_mlp, seed=seed)
    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=momentum)
    settings = LocalTraining(steps=1, batch_size=BATCH, lr=LR)
    for t in range(rounds):
        gradients = []
        for plan in plans_for_round(data.num_clients, FRACTION, seed=seed, round=t):
            x, y = data.client_data(plan.client_id)
            (batch,) = batch_schedule(len(y), settings, np.random.default_rng(plan.seed))
            index = torch.from_numpy(batch)
            loss = nn.functional.cross_entropy(module(x[index]), y[index])
            gradients.append(list(torch.autograd.grad(loss, list(module.parameters()))))
        for parameter, *worker_grads in zip(module.parameters(), *gradients, strict=True):
            parameter.grad = torch.stack(worker_grads).mean(0)  # the all-reduce
        optimizer.step()
    return flatten_params(module)


def _fedavg(
    data: FederatedDataset, algorithm: Algorithm, *, rounds: int, seed: int
) -> torch.Tensor:
    history = simulate(
        algorithm,
        data,
        digits_mlp,
        rounds=rounds,
        fraction=FRACTION,
        local=LocalTraining(steps=1, batch_size=BATCH, lr=LR),
        seed=seed,
        eval_clients=False,
        eval_every=rounds,
    )
    return history.final_state.params


def run(out_dir: Path | None = None, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Compare both pairs; return (and write) the largest differences."""
    rounds = 20 if quick else 100
    data = federate(load_digits(), IID(NUM_CLIENTS), holdout_fraction=0.0, seed=seed)
    start = flatten_params(initial_module(digits_mlp, seed=seed))
    results: dict[str, Any] = {"rounds": rounds, "clients_per_round": int(NUM_CLIENTS * FRACTION)}
    pairs = {
        "fedavg_vs_sgd": (fedavg(weighting="uniform"), 0.0),
        "fedavgm_vs_momentum_sgd": (fedavgm(server_lr=1.0, momentum=0.9, weighting="uniform"), 0.9),
    }
    for name, (algorithm, momentum) in pairs.items():
        federated = _fedavg(data, algorithm, rounds=rounds, seed=seed)
        reference = data_parallel_sgd(data, rounds=rounds, seed=seed, momentum=momentum)
        results[name] = {
            "max_abs_difference": float((federated - reference).abs().max()),
            "relative_difference": float(
                (federated - reference).norm() / (reference - start).norm()
            ),
        }
    write_results(out_dir, "e1_equivalence", results)
    return results
