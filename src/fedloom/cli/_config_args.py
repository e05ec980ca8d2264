"""The config options every run-describing command shares: --config, --set, --data-root.

``fedloom run``, ``server``, ``client`` and ``data describe`` all read one run config; this
module gives them the same three options, the same help text and the same way of turning
them into a :class:`~fedloom.config.RunConfig`. It imports nothing heavy: the config module
(and with it torch) loads only when a command actually runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedloom.names import ENGINES

if TYPE_CHECKING:
    from fedloom.config import RunConfig

__all__ = [
    "CONFIG_HELP",
    "add_config_arguments",
    "add_tracking_arguments",
    "load_run_config",
    "tracking_overrides",
]

# The lists below are prose for people, kept free of heavy imports so that --help answers at
# once; tests/test_cli.py checks them against the registry (fedloom.registry), so a built-in
# algorithm, rule or partition missing here fails a test.
CONFIG_HELP = f"""\
configuration:
  A run is described by a YAML config (see examples/). Every key has a default, so
  `fedloom run` alone runs FedAvg on scikit-learn's bundled digits, 20 clients with
  Dirichlet(0.5) label skew, 40 rounds. Override any key with --set, e.g.
    --set rounds=50 --set data.dataset=mnist --set data.partition=shards
    --set data.partition.shards_per_client=2 --set client.epochs=5 --set server.fraction=0.1
  Keys: name, seed, rounds, engine, workers,
        data.{{dataset,root,num_clients,partition,holdout_fraction,normalize,synthetic,
        scanners.{{kinds,strength}},task_sequence.{{tasks,rounds_per_task,starts}}}},
        model.{{name,buffers}}, task.{{name,<its options>}},
        client.{{epochs,steps,batch_size,lr,momentum,weight_decay,
        heterogeneity.{{low,high}},stragglers.{{fraction,policy}}}},
        server.{{fraction,sampling,lr,weighting}}, algorithm.{{name,<its parameters>}},
        eval.{{every,clients,train,finetune_steps}},
        output.{{runs_dir,plots,save_model,checkpoint,best_model,tensorboard,mlflow,
        mlflow_experiment}},
        early_stopping.{{metric,patience,min_delta,mode}},
        clock.{{speed,down_bps,up_bps,availability,trace,deadline_s}} (simulated time),
        fedbuff.{{buffer_size,concurrency,staleness.{{kind,a,b}}}} (asynchronous, needs clock)
  Datasets: digits, mnist, synthetic, fashion_mnist, emnist (data.emnist.split), cifar10,
  femnist and shakespeare (LEAF JSON), hf (a Hugging Face data set: data.hf.path ...),
  fair_synthetic and adult (a sensitive attribute s, for task: adversarial).
  Partitions: iid, shards, dirichlet, quantity, natural,
  rare_class (rare_class, prevalence, alpha, rest_alpha: one class rare and uneven),
  flower (a flwr-datasets partitioner: partitioner, options).
  Tasks (task.name, options): classification (class_weights: one per class, or
  balanced, for class-weighted cross-entropy; class_metrics: labels whose recall,
  precision, F1 and PR-AUC to report; pr_bins), focal (gamma, alpha, positive_class,
  class_metrics, pr_bins), regression, next_token, adversarial_fairness (lam, reads,
  mode, sensitive, num_groups, hidden, adversary_hidden, adversary_sees_label),
  mixture_of_experts (num_experts, expert_hidden, gate_hidden, gate: personal|shared, mix),
  gan (latent, hidden, disc_hidden, mode: alternating or minimax),
  e.g. --set task=focal --set task.gamma=2 --set task.class_metrics=[8]
  Algorithms (parameters): fedavg, fedsgd, fedprox (mu), scaffold, fednova,
  fedavgm (momentum), fedadagrad (beta1, tau), fedadam and fedyogi (beta1, beta2, tau),
  qffl (q, lipschitz), feddyn (alpha), dp_fedavg (clip_norm, noise_multiplier, delta,
  max_epsilon, accountant, denominator, min_weight_fraction, target_quantile,
  clip_learning_rate, clipped_count_stddev, local_dp), fedper (personal: parameter-name
  patterns kept on each client, e.g. [6.*]), fedbn (normalization layers kept on each
  client; needs model.buffers: local and a model with normalization layers,
  e.g. model.name=digits_cnn_bn; digits_cnn_in has instance norm instead, no buffers),
  ditto (lam, personal_steps or personal_epochs: a personal model per client, trained
  besides the global one), fedrep (personal, head_epochs or head_steps: the head
  trains first with the body frozen, then the body with the head frozen),
  lifelong (lam, mu, fisher_examples, fisher_cap: EWC on each client's own Fisher plus a
  proximal term; needs data.task_sequence.{{tasks,rounds_per_task}}),
  e.g. --set algorithm=fedprox --set algorithm.mu=0.1
  Sampling (server.sampling): uniform (exactly max(round(fraction K), 1) clients),
  poisson (each client with probability fraction; the cohort size varies).
  Aggregators (server.aggregator): mean, median, trimmed_mean (beta), krum (f, m),
  bulyan (f), geometric_median (nu, max_iter), centered_clipping (tau, iterations).
  Weightings: examples, uniform, inverse_variance.
  Every registered name with its options: python -m fedloom.config.docs
  Engines: {", ".join(ENGINES[:-1])} and {ENGINES[-1]} (with workers=N).
"""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config, --set and --data-root to one command's parser."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--set",
        "-s",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key (repeatable), e.g. --set data.partition.alpha=0.1",
    )
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding dataset folders such as mnist/ (default: $FEDLOOM_DATA or "
        "~/.cache/fedloom)",
    )


def load_run_config(args: argparse.Namespace, extra: Sequence[str] = ()) -> RunConfig:
    """The run config the options describe; ``extra`` overrides come last and win."""
    from fedloom.config import load_config

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    return load_config(args.config, [*overrides, *extra])


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --tensorboard and --mlflow (shortcuts for output.tensorboard / output.mlflow)."""
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="write TensorBoard event files (scalars per round, per-client histograms) to DIR "
        "(relative: inside the run directory)",
    )
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        help="log parameters, metrics per round and the final model to MLflow at URI, e.g. "
        "sqlite:///mlflow.db or http://127.0.0.1:5000",
    )


def tracking_overrides(args: argparse.Namespace) -> list[str]:
    """The --set overrides that --tensorboard and --mlflow stand for."""
    import json

    extra = []
    if args.tensorboard:
        extra.append(f"output.tensorboard={json.dumps(args.tensorboard)}")
    if args.mlflow:
        extra.append(f"output.mlflow={json.dumps(args.mlflow)}")
    return extra
