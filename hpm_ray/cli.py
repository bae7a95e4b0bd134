"""The ``hpm-ray`` command: parse, call one entry function per subcommand, map user errors to exit 2.

Each capability owns its subcommands in its own ``cli.py`` (``register(subparsers)``); this module only
assembles them and turns :class:`~hpm_ray.errors.HPMError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from hpm_ray import __version__
from hpm_ray.errors import HPMError, last_line

# The process-wide settings of the ``hpm-ray`` process, made here and nowhere else in the package: a library
# call (``AutoDistiller(...).run()`` in a notebook) leaves its caller's warnings and environment alone.
_QUIET_ENV = {
    # The old Tune output engine with verbose=0 prints nothing; the new one ignores reporters and prints ~12 lines.
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_TRAIN_V2_ENABLED": "0",  # only Ray Train's migration warnings
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # read when mlflow is imported
    "PYTHONWARNINGS": "ignore",  # for the subprocesses Ray starts with this environment
    "TQDM_DISABLE": "1",
}
_QUIET_LOGGERS = ("ray", "ray.tune", "ray.serve", "ray.data", "mlflow", "optuna", "alembic", "urllib3", "filelock")

# Modules with a ``register(subparsers)``; imported lazily so ``hpm-ray --help`` stays fast.
COMMAND_MODULES = (
    "hpm_ray.data.cli",
    "hpm_ray.demo",
    "hpm_ray.hpo.cli",
    "hpm_ray.distill.cli",
    "hpm_ray.registry.cli",
    "hpm_ray.serving.cli",
    "hpm_ray.drift.cli",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (exit 2) instead of the usage block."""

    def error(self, message: str):  # argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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


def quiet(verbose: bool = False) -> None:
    """Silence Ray/MLflow/Optuna chatter in this process unless ``verbose``; before Ray or MLflow is used.

    Changes the whole process (environment, warning filters, log levels): for entry points only.
    """
    # MLflow draws a download progress bar on stderr; a one-line CLI has no room for it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if verbose:
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet(args.verbose)
    if getattr(args, "direct_ingress", False):
        from hpm_ray.serving.ingress import ENV  # read by Serve from the Ray instance's environment

        os.environ[ENV] = "1"
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hpm-ray: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        cause = _root_cause(exc)
        if isinstance(cause, HPMError) or _is_registry_refusal(cause):
            print(f"hpm-ray: error: {last_line(cause)}", file=sys.stderr)
            return 2
        if args.verbose:  # an internal failure: one line unless --verbose asks for the traceback
            raise
        print(
            f"hpm-ray: internal error: {type(cause).__name__}: {last_line(cause)} (rerun with --verbose for details)",
            file=sys.stderr,
        )
        return 1


def _root_cause(exc: BaseException) -> BaseException:
    """The user's exception behind Ray's wrapper (a RayTaskError's text carries the worker's whole traceback)."""
    if "ray" not in sys.modules:  # no Ray, no wrapper (and no Ray import on a plain bad-input exit)
        return exc
    from ray.exceptions import RayTaskError

    while isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause
    return exc


def _is_registry_refusal(exc: BaseException) -> bool:
    """MLflow refusing a request for what it asks (a reserved alias name, an unknown model): bad input, exit 2."""
    if "mlflow" not in sys.modules:
        return False
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
