"""In-process executors for simulation."""

from fedloom.sim.sequential import SequentialExecutor

__all__ = ["SequentialExecutor"]
