"""Client-side local training: pure steps, composable local objectives, client programs."""

from fedloom.client.local import (
    LocalState,
    LocalTraining,
    batch_schedule,
    gradient_noise,
    local_final,
    local_init,
    local_step,
)
from fedloom.client.objectives import LocalContext, Objective, ObjectiveTerm, make_objective
from fedloom.client.program import STATISTICS, ClientProgram, plan_settings, work_norm
from fedloom.client.terms import EWCTerm, ProximalTerm, proximal_coefficient
from fedloom.client.train import train_client

__all__ = [
    "STATISTICS",
    "ClientProgram",
    "EWCTerm",
    "LocalContext",
    "LocalState",
    "LocalTraining",
    "Objective",
    "ObjectiveTerm",
    "ProximalTerm",
    "batch_schedule",
    "gradient_noise",
    "local_final",
    "local_init",
    "local_step",
    "make_objective",
    "plan_settings",
    "proximal_coefficient",
    "train_client",
    "work_norm",
]
