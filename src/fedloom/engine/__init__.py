"""The round loop, the executor protocol, evaluation and callbacks."""

from fedloom.engine.callbacks import Callback, ClientScores, History
from fedloom.engine.checkpoint import Checkpoints, Resumed
from fedloom.engine.clock import (
    Availability,
    ClientProfile,
    LogNormal,
    VirtualClock,
    draw_profiles,
)
from fedloom.engine.clock_trace import load_trace
from fedloom.engine.evaluation import Evaluator, spread_metrics
from fedloom.engine.executor import Executor
from fedloom.engine.failures import ON_CLIENT_ERROR, OnClientError
from fedloom.engine.fedbuff import FedBuff, buffered_step, run_fedbuff
from fedloom.engine.loop import Evaluate, plans_for_round, run_rounds
from fedloom.engine.validation import Rejection, UpdatePolicy, check_update, validate_updates
from fedloom.engine.work import LocalWork, assign_work

__all__ = [
    "ON_CLIENT_ERROR",
    "OnClientError",
    "Checkpoints",
    "Resumed",
    "Availability",
    "Callback",
    "ClientScores",
    "ClientProfile",
    "Evaluate",
    "Evaluator",
    "Executor",
    "FedBuff",
    "History",
    "LocalWork",
    "LogNormal",
    "Rejection",
    "UpdatePolicy",
    "VirtualClock",
    "assign_work",
    "buffered_step",
    "check_update",
    "draw_profiles",
    "load_trace",
    "plans_for_round",
    "run_fedbuff",
    "run_rounds",
    "spread_metrics",
    "validate_updates",
]
