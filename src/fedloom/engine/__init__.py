"""The round loop, the executor protocol, evaluation and callbacks."""

from fedloom.engine.callbacks import Callback, History
from fedloom.engine.evaluation import Evaluator, spread_metrics
from fedloom.engine.executor import Executor
from fedloom.engine.loop import Evaluate, plans_for_round, run_rounds
from fedloom.engine.work import LocalWork, assign_work

__all__ = [
    "Callback",
    "Evaluate",
    "Evaluator",
    "Executor",
    "History",
    "LocalWork",
    "assign_work",
    "plans_for_round",
    "run_rounds",
    "spread_metrics",
]
