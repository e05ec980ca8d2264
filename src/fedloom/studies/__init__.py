"""Studies: small, rerunnable experiments that show an algorithm does what its paper says.

Each study is a module with ``run(out_dir=None, *, quick=False, ...) -> dict``: it returns
its numbers (the tests assert on them) and, given a folder, writes ``results.json`` and its
plot there. ``fedloom study NAME`` runs one from the command line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["STUDIES", "load_study"]

STUDIES = {
    "inconsistency": "FedAvg vs FedNova: unequal local work and the objective (quadratics)",
    "e1-equivalence": "FedAvg with one local step == data-parallel SGD (digits)",
    "stragglers": "FedAvg vs FedProx with 0% and 90% stragglers on Synthetic(1,1)",
    "tyranny": "example vs uniform weighting vs q-FFL: 4 very unequal clients (digits)",
    "mnist-drift": "rounds to 97% on pathological non-IID MNIST for six variants",
    "robustness": "aggregators x attacks x attacker fractions on MNIST 2NN (heatmap)",
    "rare-events": "cross-entropy vs weighted CE vs focal loss on a 2% MNIST class (recall, PR-AUC)",
    "dp-audit": "empirical lower bound on DP-FedAvg's epsilon from canary clients",
    "dp-tradeoff": "DP-FedAvg accuracy vs epsilon, MNIST 2NN, 1,000 clients",
    "scanner-skew": "FedAvg vs instance norm vs FedBN when each client has its own scanner (digits)",
    "personalization": "FedAvg, fine-tuning, FedPer, FedRep, Ditto per client on Dirichlet(0.1) MNIST",
    "compression": "accuracy vs upload bytes for fp16/bf16/int8/QSGD/top-k+EF, MNIST 2NN",
    "lifelong": "forgetting on split MNIST: plain vs proximal vs EWC vs EWC + proximal",
    "async": "synchronous FedAvg vs FedBuff in simulated time, long-tailed speeds (MNIST 2NN)",
    "adversarial-fairness": "adversarial training (Zhang et al.) lambda vs accuracy, adversary, DP/EO gaps",
    "mixture-of-experts": "experts + personal gate vs global vs local models on clustered digits",
    "gan": "federated GAN, clients with 2 digits each: mode coverage and Frechet distance vs central",
}

MODULES = {"async": "asynchronous"}
"""Studies whose module is not named after them (``async`` is a Python keyword)."""


def load_study(name: str) -> ModuleType:
    """The module of study ``name`` (see :data:`STUDIES`)."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of: {', '.join(STUDIES)}")
    module = MODULES.get(name, name.replace("-", "_"))
    return importlib.import_module(f"fedloom.studies.{module}")
