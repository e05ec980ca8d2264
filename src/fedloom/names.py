"""Names a run chooses between that the command line needs before anything heavy is loaded.

``fedloom --help`` and ``fedloom run --help`` list these choices; keeping them here, in a
module that imports nothing but :mod:`typing`, lets the command line build its parser
without importing torch. The modules that act on a choice import it from here (the
simulation engines: :func:`fedloom.sim.make_executor`), so each list exists once.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ENGINES", "Engine"]

Engine = Literal["auto", "sequential", "vectorized", "process", "ray"]
"""A simulation engine; ``auto`` is vectorized where the model allows it, else sequential."""

ENGINES: tuple[Engine, ...] = get_args(Engine)
"""Every :data:`Engine`, in the order the help text lists them."""
