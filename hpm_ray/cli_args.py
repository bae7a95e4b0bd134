"""argparse pieces shared by the subcommand modules (``*/cli.py``): runtime flags and checked number types.

Below every ``cli.py`` (the top-level one assembles the subcommands, so helpers living there would make
each capability's CLI import the module that loads it).
"""

from __future__ import annotations

import argparse


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by every subcommand that runs work on Ray."""
    p.add_argument(
        "--address", help="join this Ray cluster ('auto', 'ray://host:10001'; default $RAY_ADDRESS, else local)"
    )
    p.add_argument("--num-cpus", type=positive_int, help="CPUs for a local Ray instance (default: all cores)")


def runtime_flags(args: argparse.Namespace) -> dict:
    """The runtime flags the user gave, as a ``runtime`` override for ``load_spec`` (merged into the spec file's)."""
    given = {"address": args.address, "num_cpus": args.num_cpus, "verbose": getattr(args, "verbose", False) or None}
    return {k: v for k, v in given.items() if v is not None}


def port_number(text: str) -> int:
    """argparse type for a TCP port, checked before any Ray or Serve work starts."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts: a clear one-line error for 0, negatives and non-numbers."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
