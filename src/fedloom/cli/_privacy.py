"""``fedloom privacy``: the client-level privacy of a DP-FedAvg run, before spending it.

Built from light modules only; the handler imports ``dp-accounting`` when it runs.
"""

from __future__ import annotations

import argparse

from rich.console import Console

__all__ = ["add_privacy_command"]


def add_privacy_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    privacy = commands.add_parser(
        "privacy",
        help="epsilon of a DP-FedAvg run, or the noise multiplier for a target epsilon",
        description="Client-level (add/remove or replace one client) differential privacy of "
        "T rounds of the sampled Gaussian mechanism, from Google's dp-accounting. Give "
        "--noise-multiplier to get epsilon, or --epsilon to get the noise multiplier needed.",
    )
    privacy.add_argument("--population", type=int, required=True, metavar="N",
                         help="clients in the population")  # fmt: skip
    privacy.add_argument("--cohort", type=int, required=True, metavar="M",
                         help="clients per round (expected, with poisson sampling)")  # fmt: skip
    privacy.add_argument("--rounds", type=int, required=True, metavar="T")
    privacy.add_argument("--delta", type=float, required=True, metavar="D")
    what = privacy.add_mutually_exclusive_group(required=True)
    what.add_argument("--noise-multiplier", type=float, metavar="Z",
                      help="noise std / clip norm: print epsilon")  # fmt: skip
    what.add_argument("--epsilon", type=float, metavar="E",
                      help="target epsilon: print the noise multiplier needed")  # fmt: skip
    privacy.add_argument("--accountant", choices=("rdp", "pld"), default="rdp",
                         help="dp-accounting's RDP or PLD accountant (default rdp)")  # fmt: skip
    privacy.add_argument(
        "--sampling", choices=("poisson", "uniform"), default="poisson",
        help="poisson: each client with probability M/N (add/remove one client); uniform: "
        "exactly M without replacement (replace one client; rdp only). Default poisson",
    )  # fmt: skip
    privacy.set_defaults(handler=_cmd_privacy)


def _cmd_privacy(args: argparse.Namespace, console: Console) -> int:
    from fedloom.privacy import PrivacySetting, epsilon, noise_multiplier_for

    setting = PrivacySetting(
        population=args.population,
        cohort=args.cohort,
        rounds=args.rounds,
        delta=args.delta,
        sampling=args.sampling,
        accountant=args.accountant,
    )
    scheme = (
        f"{args.rounds} rounds, {args.cohort} of {args.population} clients per round "
        f"({args.sampling} sampling, q = {setting.rate:.4g}), delta = {args.delta:g}, "
        f"{args.accountant} accountant"
    )
    if args.epsilon is not None:
        z = noise_multiplier_for(setting, args.epsilon)
        console.print(f"noise multiplier {z:.4f} for epsilon {args.epsilon:g}: {scheme}")
    else:
        eps = epsilon(setting, args.noise_multiplier)
        console.print(
            f"epsilon {eps:.4f} with noise multiplier {args.noise_multiplier:g}: {scheme}"
        )
    return 0
