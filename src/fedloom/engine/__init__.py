"""The round loop, the executor protocol, evaluation and callbacks."""

from fedloom.engine.callbacks import Callback, History
from fedloom.engine.evaluation import Evaluator, spread_metrics
from fedloom.engine.executor import Executor
from fedloom.engine.loop import Evaluate, plans_for_round, run_rounds

__all__ = [
    "Callback",
    "Evaluate",
    "Evaluator",
    "Executor",
    "History",
    "plans_for_round",
    "run_rounds",
    "spread_metrics",
]
