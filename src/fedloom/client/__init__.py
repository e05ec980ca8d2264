"""Client-side local training: pure steps and composable local objectives."""

from fedloom.client.local import (
    LocalState,
    LocalTraining,
    batch_schedule,
    local_final,
    local_init,
    local_step,
    train_client,
)
from fedloom.client.objectives import LocalContext, Objective, ObjectiveTerm, make_objective

__all__ = [
    "LocalContext",
    "LocalState",
    "LocalTraining",
    "Objective",
    "ObjectiveTerm",
    "batch_schedule",
    "local_final",
    "local_init",
    "local_step",
    "make_objective",
    "train_client",
]
