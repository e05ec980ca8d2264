"""Rounds a paper preset needs to reach a test accuracy (McMahan et al. 2017's measure).

    python examples/papers/rounds_to_target.py examples/papers/mcmahan2017_2nn_iid.yaml \
        --target 0.97 [--max-rounds 300] [--set client.batch_size=50 ...] [--out result.json]

Runs the preset in simulation and stops at the first round whose global test accuracy
reaches ``--target`` (or at ``--max-rounds``: a shortened run, reported as not reached,
with the best accuracy seen).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.engine import Callback
from fedloom.experiment import simulate_config


class StopAtTarget(Callback):
    """Ends the run at the first round with ``test_accuracy >= target``."""

    def __init__(self, target: float):
        self.target, self.reached, self.best, self.curve = target, None, 0.0, []

    def on_round(self, report: Any, state: Any) -> None:
        accuracy = report.metrics.get("test_accuracy")
        if accuracy is None:
            return
        self.curve.append(round(float(accuracy), 4))
        self.best = max(self.best, accuracy)
        if accuracy >= self.target and self.reached is None:
            self.reached = report.round
            self.stop_requested = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--max-rounds", type=int, help="a shortened run (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    overrides = list(args.set) + ([f"rounds={args.max_rounds}"] if args.max_rounds else [])
    config = load_config(args.config, overrides)
    stop = StopAtTarget(args.target)
    started = time.perf_counter()
    history = simulate_config(config, callbacks=[stop])
    result = {
        "config": args.config,
        "overrides": args.set,
        "target": args.target,
        "rounds_to_target": stop.reached,
        "rounds_run": len(history.reports),
        "best_test_accuracy": round(stop.best, 4),
        "wall_s": round(time.perf_counter() - started, 1),
        "accuracy_per_round": stop.curve,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "accuracy_per_round"}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
