"""Every private Ray, Serve and MLflow call hpm-ray makes, in one place, each with a fallback.

Ray is pinned to one minor series and MLflow to one major (pyproject.toml), and private names still move
between their releases. ``tests/test_compat.py`` checks each private name against the installed versions, so
an upgrade that renames one fails there, by name, instead of silently taking the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def enable_ray_token_auth_if_available() -> bool:
    """Send this machine's Ray auth token when joining an explicit ``host:port`` (Ray's own "auto" rule).

    Fallback: nothing (the user sets ``RAY_AUTH_MODE=token`` as Ray's docs say).
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return False
    return bool(maybe_enable_token_auth_if_token_available(warn_if_disabled=False))


@contextmanager
def local_ray_on_loopback() -> Iterator[bool]:
    """While a local Ray instance starts in this block, its node address is 127.0.0.1, so its GCS, raylet, object
    manager, workers and dashboard agent listen on loopback only (Ray's servers bind the node address, and all
    interfaces for any other). Ray does this itself where it runs no multi-node clusters (macOS, Windows); there
    is no public option: ``ray.init(_node_ip_address="127.0.0.1")`` is resolved back to the machine's address.
    Yields whether it applied; the constant is put back on exit (the started node keeps its address).

    Fallback: Ray's own choice of address (its servers then listen on all interfaces).
    """
    try:
        from ray._private import ray_constants
    except ImportError:
        yield False
        return
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield False
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield True
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def task_attempt_number() -> int:
    """0 in a task's first run, n after Ray re-ran it n times (lost worker or node); 0 outside a Ray task.

    Ray's public runtime context has the task id but not the attempt. Fallback: 0.
    """
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_task_id() is None:
        return 0
    try:
        core_worker = ray._private.worker.global_worker.core_worker
        return int(core_worker.get_current_task_attempt_number())
    except AttributeError:
        return 0


def serve_target_groups(app_name: str) -> list:
    """Serve's target groups of ``app_name`` (protocol, route prefix, targets with ip/port/name).

    Serve 2.60 publishes them for load balancers only through its controller (no public call yet).
    Fallback: no groups, which callers read as "direct ingress is off".
    """
    import ray
    from ray.serve.context import _get_global_client

    controller = getattr(_get_global_client(), "_controller", None)
    if controller is None or not hasattr(controller, "get_target_groups"):
        return []
    return list(ray.get(controller.get_target_groups.remote(app_name)))


def python_model_predict(model) -> Callable[[Any], Any]:
    """``predict(frame)`` of a loaded pyfunc's own :class:`mlflow.pyfunc.PythonModel`, without MLflow's
    per-call schema enforcement (public ``unwrap_python_model``; hpm-ray's models ignore ``context``).

    Fallback, for a model that is not a ``PythonModel``: the pyfunc's checked ``predict``.
    """
    from mlflow.exceptions import MlflowException

    try:
        python_model = model.unwrap_python_model()
    except MlflowException:
        return model.predict
    return lambda frame: python_model.predict(None, frame)


def set_mlflow_uris(uri: str) -> None:
    """Point MLflow's tracking and registry at ``uri`` in this process without exporting them to ``os.environ``.

    ``mlflow.set_tracking_uri`` / ``set_registry_uri`` also write ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``
    into the environment (MLflow 3.17, for subprocesses), which a library must not do to its caller; MLflow
    reads its module-level URIs first. Fallback: the public setters, then the environment put back as it was.
    """
    import os

    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    if hasattr(tracking_utils, "_tracking_uri") and hasattr(registry_utils, "_registry_uri"):
        if tracking_utils._tracking_uri != uri:
            tracking_utils._tracking_uri = uri
            _reset_tracer_provider()
        registry_utils._registry_uri = uri
        return
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _reset_tracer_provider() -> None:
    """What ``mlflow.set_tracking_uri`` does besides the assignment: traces follow the new URI."""
    try:
        from mlflow.tracing.provider import reset
    except ImportError:
        return
    reset()
