"""Run a whole experiment from a :class:`~fedloom.config.RunConfig`: what ``fedloom run`` does.

Builds data, model and algorithm from the config, simulates, and writes the run directory:
``config.yaml`` (resolved), ``metrics.jsonl`` / ``metrics.csv``, ``model.safetensors``,
``summary.json`` and PNG plots.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from fedloom.config import RunConfig, RunSpec, build_attack, build_client_store, build_run
from fedloom.config.clock import build_clock, build_fedbuff
from fedloom.config.spec import stopping_callbacks, tracking_callbacks
from fedloom.data import FederatedDataset
from fedloom.engine import Callback, Checkpoints, FedBuff, History
from fedloom.engine.early import BEST_MODEL_FILE, stopping_summary
from fedloom.errors import ConfigError
from fedloom.report import (
    MetricsFiles,
    ProgressBar,
    check_runs_dir,
    create_run_dir,
    plot_run,
    save_model,
    summary_table,
)
from fedloom.simulation import simulate
from fedloom.simulation_async import simulate_fedbuff

log = logging.getLogger("fedloom")

__all__ = ["ExperimentOutcome", "run_experiment", "simulate_config"]


@dataclass(frozen=True)
class ExperimentOutcome:
    run_dir: Path
    history: History
    elapsed_s: float


def simulate_config(
    config: RunConfig,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint: Checkpoints | None = None,
    data: FederatedDataset | None = None,
    spec: RunSpec | None = None,
    stopping: Sequence[Callback] | None = None,
) -> History:
    """Simulate ``config`` in this process and return its history; writes no files.

    The same data, model, algorithm and seed as ``fedloom run`` and ``fedloom server`` (all
    three start from :func:`fedloom.config.build_run`), so a deployed run can be checked
    against its simulation. ``data`` (a partitioned dataset) or ``spec`` (the whole built
    run) skip rebuilding what the caller already has. ``stopping``: the config's early
    stopping and best-model callbacks when the caller built them (it then reads them after
    the run); by default they are built here (the best model stays in memory).
    """
    spec = spec if spec is not None else build_run(config, data=data)
    if stopping is None:
        stopping = stopping_callbacks(config, spec.module, None)
    if config.fedbuff is not None:
        return _simulate_fedbuff(config, spec, [*callbacks, *stopping], checkpoint)
    return simulate(
        spec.algorithm,
        spec.data,
        spec.module,
        rounds=config.rounds,
        fraction=config.server.fraction,
        sampling=config.server.sampling,
        local=spec.local,
        task=spec.task,
        work=spec.work,
        attack=build_attack(config.attack),
        policy=spec.policy,
        seed=config.seed,
        buffers=config.model.buffers,
        engine=config.engine,
        workers=config.workers,
        eval_every=config.eval.every,
        eval_clients=config.eval.clients,
        eval_train=config.eval.train,
        finetune_steps=config.eval.finetune_steps,
        callbacks=[*callbacks, *stopping],
        checkpoint=checkpoint,
        on_client_error=config.server.on_client_error,
        client_states=build_client_store(
            config.server, checkpoint.directory / "client-state" if checkpoint else None
        ),
        selection=spec.selection,
        task_sequence=(
            config.data.task_sequence.build() if config.data.task_sequence is not None else None
        ),
        clock=build_clock(config.clock, spec.data.num_clients, seed=config.seed),
    )


def _simulate_fedbuff(
    config: RunConfig,
    spec: RunSpec,
    callbacks: Sequence[Callback],
    checkpoint: Checkpoints | None,
) -> History:
    """The ``fedbuff`` section's asynchronous run: ``rounds`` server steps on the clock."""
    if config.attack.kind != "none":
        raise ConfigError("fedbuff: simulated attacks run only in synchronous rounds")
    if checkpoint is not None:
        log.warning("fedbuff: asynchronous runs are not checkpointed (no --resume)")
    clock = build_clock(config.clock, spec.data.num_clients, seed=config.seed)
    if clock is None:  # RunConfig checks it; kept for type checkers
        raise ConfigError("fedbuff needs the clock section")
    return simulate_fedbuff(
        spec.algorithm,
        spec.data,
        spec.module,
        clock=clock,
        fedbuff=build_fedbuff(config.fedbuff) if config.fedbuff else FedBuff(),
        steps=config.rounds,
        local=spec.local,
        task=spec.task,
        policy=spec.policy,
        seed=config.seed,
        engine=config.engine if config.engine != "auto" else "sequential",
        eval_every=config.eval.every,
        eval_clients=config.eval.clients,
        callbacks=callbacks,
        on_client_error=config.server.on_client_error,
    )


def run_experiment(
    config: RunConfig,
    *,
    console: Console | None = None,
    show_progress: bool = True,
    resume: Path | None = None,
) -> ExperimentOutcome:
    """Run ``config`` end to end and write its run directory.

    With ``resume``, continue the run in that directory from its checkpoint (``config`` is
    its ``config.yaml``, possibly with more rounds) instead of starting a new directory.
    A config that cannot run (an unwritable ``output.runs_dir``, a model that does not fit
    the data, missing data) raises :class:`~fedloom.errors.ConfigError` before any training.
    """
    if resume is None:
        check_runs_dir(config.output.runs_dir)  # before the data loads: fail at once
    console = console or Console(stderr=True, quiet=not show_progress)
    started = time.perf_counter()
    spec = build_run(config)
    data, algorithm, module = spec.data, spec.algorithm, spec.module
    if resume is not None:
        run_dir = resume
    else:
        run_dir = create_run_dir(
            config.output.runs_dir,
            config.name,
            default_stem=f"{config.data.dataset}-{algorithm.name}",
        )
    (run_dir / "config.yaml").write_text(config.to_yaml())
    checkpoint = (
        Checkpoints(run_dir, fingerprint=config.fingerprint()) if config.output.checkpoint else None
    )
    console.print(
        f"[bold]fedloom[/] {algorithm.name} on {data.dataset.name}: {data.num_clients} clients "
        f"({config.data.partition.kind}), {config.rounds} rounds, C = {config.server.fraction}"
        f"{' (poisson)' if config.server.sampling == 'poisson' else ''}, "
        f"E = {config.client.epochs}, B = {config.client.batch_size}, engine {config.engine}"
    )
    stopping = stopping_callbacks(config, module, run_dir)
    callbacks: list[Callback] = [
        MetricsFiles(run_dir),
        *tracking_callbacks(config, module, run_dir),
    ]
    if show_progress:
        callbacks.append(ProgressBar(console))
    history = simulate_config(
        config, callbacks=callbacks, spec=spec, checkpoint=checkpoint, stopping=stopping
    )
    elapsed = time.perf_counter() - started
    final = history.final_state
    if config.output.save_model:
        save_model(run_dir / "model.safetensors", module, final.params, final.buffers)
    if config.output.plots:
        plot_run(history.records(), run_dir, title=f"{algorithm.name} on {data.dataset.name}")
    summary: dict[str, float | str] = {**history.records()[-1], "elapsed_s": elapsed}
    summary.update({"num_params": final.params.numel(), **stopping_summary(stopping)})
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(summary_table(history, title="run summary", run_dir=run_dir, elapsed_s=elapsed))
    if "stopped_early" in summary:
        console.print(f"[yellow]{summary['stopped_early']}[/]")
    if "best_round" in summary:
        console.print(
            f"best {config.output.best_model} at round {summary['best_round']}: "
            f"{run_dir / BEST_MODEL_FILE}"
        )
    return ExperimentOutcome(run_dir, history, elapsed)
