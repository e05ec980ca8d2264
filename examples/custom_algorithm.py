"""An algorithm of your own: FedExP, defined here, registered with one line, run from Python
and from YAML (Jhunjhunwala et al. 2023, "FedExP: Speeding up Federated Averaging via
Extrapolation": the server step is max(1, mean_k |D_k|^2 / (2 (|D|^2 + eps))) times the
averaged update D, large when the clients' updates disagree)."""

from dataclasses import dataclass, replace
from typing import Annotated

from annotated_types import Gt

import fedloom as fl
from fedloom.aggregate import PerClient
from fedloom.config import load_config, register_algorithm
from fedloom.experiment import simulate_config


@dataclass(frozen=True)
class SquaredNorms(PerClient):  # per client: tally w_k |D_k|^2 (the pipeline sums tallies)
    def update(self, contribution, state, *, info):
        squared = contribution.weight * float(contribution.update.double().pow(2).sum())
        return replace(contribution, tallies={**contribution.tallies, "fedexp/sq": squared})


@dataclass(frozen=True)
class Extrapolate:  # on the aggregate: the extrapolated step from the cohort's tallies
    eps: float
    name = "extrapolate"
    kind = "server"

    def init(self, params):
        return ()

    def update(self, delta, state, *, cohort, params, info):
        spread = cohort.tallies["fedexp/sq"] / cohort.total_weight  # sum_k p_k |D_k|^2
        step = max(1.0, spread / (2 * (float(delta.double().pow(2).sum()) + self.eps)))
        return delta * step, state


def fedexp(eps: Annotated[float, Gt(0)] = 1e-3, *, weighting: str = "examples") -> fl.Algorithm:
    """FedExP (Jhunjhunwala et al. 2023): FedAvg with an extrapolated server step."""
    fedavg = fl.fedavg(weighting=weighting)
    stages = {"per_client": (SquaredNorms(),), "server": (Extrapolate(eps),)}
    return replace(fedavg.with_aggregation(**stages), name="fedexp")


register_algorithm("fedexp", fedexp)  # now `algorithm: {name: fedexp, eps: ...}` works

if __name__ == "__main__":
    setup = ["rounds=15", "model.name=digits_mlp", "client.epochs=1", "data.partition.alpha=0.1"]
    for name in ("fedavg", "fedexp"):
        history = simulate_config(load_config(None, [*setup, f"algorithm={name}"]))
        print(f"{name}: test accuracy {history.reports[-1].metrics['test_accuracy']:.3f}")
