"""The ``hpm-ray`` command: parse, call one entry function per subcommand, map user errors to exit 2.

Each capability owns its subcommands in its own ``cli.py`` (``register(subparsers)``); this module only
assembles them and turns :class:`~hpm_ray.errors.HPMError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hpm_ray import __version__
from hpm_ray.errors import HPMError

# Modules with a ``register(subparsers)``; imported lazily so ``hpm-ray --help`` stays fast.
COMMAND_MODULES = ("hpm_ray.data.cli", "hpm_ray.demo", "hpm_ray.hpo.cli", "hpm_ray.distill.cli", "hpm_ray.registry.cli", "hpm_ray.serving.cli", "hpm_ray.drift.cli")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2) instead of the usage block."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by every subcommand that runs work on Ray."""
    p.add_argument("--address", help="join this Ray cluster ('auto', 'ray://host:10001'; default $RAY_ADDRESS, else local)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray instance (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hpm-ray",
        description="Ray-native tabular ML: conformal HPO, HPM-KD distillation, registry gates and A/B serving.",
    )
    parser.add_argument("--version", action="version", version=f"hpm-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show Ray/MLflow logs and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hpm_ray.runtime import quiet

    quiet(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HPMError as exc:
        print(f"hpm-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpm-ray: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an internal failure: one line unless --verbose asks for the traceback
        if args.verbose:
            raise
        print(f"hpm-ray: internal error: {type(exc).__name__}: {exc} (rerun with --verbose for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
