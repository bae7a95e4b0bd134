"""The only place that knows how to start or join Ray, where runs are written, and where MLflow points.

Everything else asks this module, so that a laptop run and a cluster run differ only in ``--address`` /
``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from hpm_ray.errors import SpecError

RUNS_DIR_ENV = "HPM_RAY_RUNS_DIR"
# What workers of a Ray instance started here get when not verbose (passed to Ray, never put in os.environ).
QUIET_WORKER_ENV = {"PYTHONWARNINGS": "ignore", "RAY_AIR_NEW_OUTPUT": "0", "RAY_TRAIN_V2_ENABLED": "0"}


def runs_dir(path: str | Path | None = None) -> Path:
    """The project-local folder for runs, MLflow store and Tune results: ``$HPM_RAY_RUNS_DIR`` or ``./hpm_runs``."""
    p = Path(path or os.environ.get(RUNS_DIR_ENV) or "hpm_runs").expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def tune_storage(base: str | Path | None = None) -> str:
    """Where Ray Tune keeps experiment state; never ``~/ray_results``."""
    p = runs_dir(base) / "ray_results"
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


def init_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> dict:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local instance; idempotent.

    Returns the cluster's resources. ``num_cpus`` applies only when starting a local instance (default:
    all cores). A local instance runs without the dashboard and listens on loopback only (a cluster node is
    joined as it is); ``verbose`` forwards worker logs. Nothing here
    changes the caller's process beyond Ray's own start (no warning filters, no environment variables): the
    quiet settings travel to the workers in Ray's ``runtime_env``; ``hpm-ray`` itself quiets its own process.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS") or None
    level = logging.INFO if verbose else logging.ERROR
    kwargs: dict = dict(logging_level=level, log_to_driver=verbose, ignore_reinit_error=True)
    # Workers do not log to MLflow (the driver does, from Tune callbacks and task results), so the only
    # thing they need from the driver's environment is to be as quiet as it is.
    runtime_env = None if verbose else {"env_vars": dict(QUIET_WORKER_ENV)}
    from hpm_ray._compat import local_ray_on_loopback

    if address:
        _check_reachable(address)
        _token_auth_for(address)
        # one init_ray started in another process (loopback only) is joined the way it was started
        with local_ray_on_loopback() if _loopback_only(address) else contextlib.nullcontext():
            ray.init(address=address, runtime_env=runtime_env, **kwargs)
    else:
        # "local" always starts a fresh instance; a bare ray.init() would join any cluster it finds on the machine.
        # Its ports (GCS, raylet, object manager, workers, dashboard agent) listen on loopback only, as Serve's do.
        with local_ray_on_loopback():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env, **kwargs)
    return ray.cluster_resources()


def require_free_port(host: str, port: int, address: str | None) -> None:
    """Refuse a busy HTTP port up front when hpm-ray will start Ray (and Serve) itself.

    Joining a cluster (``address``, $RAY_ADDRESS, or the Ray this process already runs) is different: its Serve
    may already own the port.
    """
    import socket
    import sys

    if address or os.environ.get("RAY_ADDRESS") or ("ray" in sys.modules and sys.modules["ray"].is_initialized()):
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a closed port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SpecError(
                f"port {port} on {host} is not available ({exc.strerror}); choose another with --port"
            ) from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A clear one-line refusal for a malformed or silent ``host:port`` address (Ray itself retries for minutes)."""
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SpecError(f"--address: expected 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SpecError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); check the address or "
            "start one with 'ray start --head'"
        ) from None


def _loopback_only(address: str) -> bool:
    """Whether ``host:port`` is a Ray on this machine that listens on loopback only (as :func:`init_ray` starts
    it). Ray rewrites a loopback address to the machine's own before connecting, which such an instance refuses;
    a loopback address that the machine's own address also answers is an ordinary node, joined as Ray does."""
    import ipaddress
    import socket

    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if address.startswith("ray://") or not sep or not port.isdigit():
        return False
    try:
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            return False
    except ValueError:  # a host name
        return False
    own = own_address()
    if own is None:
        return True
    try:
        socket.create_connection((own, int(port)), timeout=2).close()
    except OSError:
        return True
    return False


def own_address() -> str | None:
    """The address other hosts reach this machine on (its default route's; a UDP connect sends nothing), or
    None on a machine with no interface but loopback."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only the routing table is consulted
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def _token_auth_for(address: str) -> None:
    """Let ``--address host:port`` join a token-auth cluster the way ``--address auto`` does.

    Ray 2.60 turns token auth on for new clusters, but a client naming an explicit address only sends its token
    when ``RAY_AUTH_MODE=token`` is set. With the mode unset and a token on this machine (``$RAY_AUTH_TOKEN``,
    ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) we apply Ray's own "auto" rule; an explicit
    ``RAY_AUTH_MODE`` (``token`` or ``disabled``) always wins.
    """
    from hpm_ray._compat import enable_ray_token_auth_if_available

    if address != "auto":
        enable_ray_token_auth_if_available()


def default_tracking_uri(base: str | Path | None = None) -> str:
    return f"sqlite:///{runs_dir(base) / 'mlflow.db'}"


def tracking_uri(base: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a sqlite store in the runs folder (the registry works on it)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(base)


def setup_mlflow(base: str | Path | None = None) -> str:
    """Point MLflow's tracking and registry at :func:`tracking_uri` in this process; returns the URI.

    Unlike ``mlflow.set_tracking_uri``, this does not export ``MLFLOW_TRACKING_URI`` to ``os.environ``.
    """
    from hpm_ray._compat import set_mlflow_uris

    uri = tracking_uri(base)
    set_mlflow_uris(uri)
    return uri


def mlflow_experiment(name: str, base: str | Path | None = None) -> str:
    """Get or create an MLflow experiment; with the default local store, artifacts go to the runs folder.

    MLflow's own default artifact root is ``./mlruns`` relative to whatever the current folder is.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = setup_mlflow(base)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri == default_tracking_uri(base):
        artifact_location = (runs_dir(base) / "artifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our look-up and create.
        return client.get_experiment_by_name(name).experiment_id
