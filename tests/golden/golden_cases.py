"""Golden runs: short experiments whose numbers were recorded before the core was opened up.

Each case is a small ``RunConfig`` (digits, 10 clients, 3 rounds) run through
``simulate_config``; the record holds the SHA-256 of the final parameters' bytes and every
round's metrics (``wall_s`` and other timings left out). ``golden.json`` was written by
``python tests/golden/golden_cases.py`` on the code as it stood before the refactoring of issue 12,
so the test fails if any algorithm's numbers change by a single bit.

Bit-exactness holds on one machine only: another CPU (AMD EPYC instead of the Intel Xeon the
records were first written on) makes torch pick other float kernels, and the losses move in
the seventh digit. So the file records the machine it was written on (``"_machine"``). On
that machine the test asserts bit for bit (the parameters' SHA-256 and every metric); on any
other it asserts every metric and a random projection of the final parameters to a relative
1e-5, which still catches any real change of an algorithm.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).with_name("golden.json")
TIMINGS = {"wall_s"}

BASE: dict[str, Any] = {
    "rounds": 3,
    "seed": 7,
    "data": {"num_clients": 10, "partition": {"kind": "dirichlet", "alpha": 0.5}},
    "model": {"name": "digits_mlp"},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
    "server": {"fraction": 0.5},
    "output": {"plots": False, "save_model": False, "checkpoint": False},
}

ALGORITHMS: dict[str, Any] = {
    "fedavg": "fedavg",
    "fedsgd": "fedsgd",
    "fedprox": {"name": "fedprox", "mu": 0.1},
    "scaffold": "scaffold",
    "fednova": "fednova",
    "fedavgm": "fedavgm",
    "fedadagrad": "fedadagrad",
    "fedadam": "fedadam",
    "fedyogi": "fedyogi",
    "qffl": {"name": "qffl", "q": 1.0},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def cases() -> dict[str, dict[str, Any]]:
    """Name -> raw config. Every algorithm on both in-process engines, plus the options that
    reach other code paths (momentum and weight decay, robust rules, clipping, weighting,
    heterogeneous work, batch norm kept local, the default run's CNN)."""
    out: dict[str, dict[str, Any]] = {}
    for name, algorithm in ALGORITHMS.items():
        for engine in ("sequential", "vectorized"):
            out[f"{name}-{engine}"] = _merge(BASE, {"algorithm": algorithm, "engine": engine})
    extras: dict[str, dict[str, Any]] = {
        "momentum-wd": {"client": {"momentum": 0.9, "weight_decay": 1e-3}},
        "fednova-momentum": {"algorithm": "fednova", "client": {"momentum": 0.5}},
        "median": {"server": {"aggregator": "median"}},
        "krum": {"server": {"aggregator": {"name": "krum", "f": 1, "m": 2}}},
        "trimmed-clip": {"server": {"aggregator": "trimmed_mean", "clip_norm": 0.5}},
        "centered-clipping": {"server": {"aggregator": "centered_clipping"}},
        "inverse-variance": {"server": {"weighting": "inverse_variance"}},
        "stragglers": {
            "client": {
                "epochs": 2,
                "heterogeneity": {"low": 1, "high": 2},
                "stragglers": {"fraction": 0.4},
            }
        },
        "steps": {"client": {"steps": 5}},
        "hierarchy": {"server": {"hierarchy": {"branching": [5]}, "fraction": 1.0}},
        "cnn": {"model": {"name": "digits_cnn"}, "client": {"batch_size": 10}},
    }
    for name, extra in extras.items():
        for engine in ("sequential", "vectorized"):
            out[f"{name}-{engine}"] = _merge(_merge(BASE, {"engine": engine}), extra)
    return out


def machine() -> dict[str, str]:
    """What decides the float kernels: the CPU model and the torch build."""
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {"cpu": cpu, "torch": torch.__version__}


def record(raw: dict[str, Any]) -> dict[str, Any]:
    """Run one case and return its golden record."""
    import torch

    from fedloom.config import RunConfig
    from fedloom.experiment import simulate_config

    history = simulate_config(RunConfig.from_dict(raw))
    params = history.final_state.params.detach().contiguous()
    directions = torch.randn(4, params.numel(), generator=torch.Generator().manual_seed(0))
    return {
        "params_sha256": hashlib.sha256(params.numpy().tobytes()).hexdigest(),
        "params_sum": float(params.double().sum()),
        "params_projection": (directions.double() @ params.double()).tolist(),
        "metrics": [
            {k: v for k, v in r.metrics.items() if k not in TIMINGS} for r in history.reports
        ],
    }


def main(argv: list[str]) -> None:
    records: dict[str, Any] = {name: record(raw) for name, raw in cases().items()}
    records["_machine"] = machine()
    GOLDEN.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(records)} golden records to {GOLDEN}")


if __name__ == "__main__":
    main(sys.argv[1:])
