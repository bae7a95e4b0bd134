"""Shared test setup: one Ray instance per session, MLflow and Ray state in a temp folder, never in $HOME.

Environment is set at import time, before any test imports Ray or MLflow, so every process the tests start
(Ray workers, CLI subprocesses) inherits it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

SANDBOX = Path(tempfile.mkdtemp(prefix="hpm-ray-tests-"))
# Ray writes ~/.ray/auth_token on start; MLflow and Optuna may write under ~ too. Point home at the sandbox.
os.environ["HOME"] = str(SANDBOX / "home")
os.environ["HPM_RAY_RUNS_DIR"] = str(SANDBOX / "runs")
os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
for var in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
    os.environ.pop(var, None)
(SANDBOX / "home").mkdir(parents=True, exist_ok=True)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance (2 CPUs) for the whole session; returns its GCS address."""
    import ray

    from hpm_ray.runtime import init_ray

    init_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_uri():
    """The session's MLflow tracking URI (a sqlite store in the sandbox), already set on the client."""
    from hpm_ray.runtime import setup_mlflow

    return setup_mlflow()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port_source():
    """A function handing out free loopback ports, for tests that start several servers."""
    return free_port


@pytest.fixture
def loopback_port() -> int:
    return free_port()


@pytest.fixture
def lines_until():
    """``f(proc, stop, timeout)``: stdout lines of ``proc`` up to the first where ``stop(line)`` is true (all of
    them if it exits or the time runs out). Reads in a thread, so a silent subprocess cannot hang the test."""

    def read_until(proc, stop, timeout: float) -> list[str]:
        lines: list[str] = []

        def read():
            for line in iter(proc.stdout.readline, ""):
                lines.append(line)
                if stop(line):
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        return lines

    return read_until


@pytest.fixture(scope="module")
def serve_port(ray_session) -> int:
    """Ray Serve's HTTP proxy on a free loopback port for one test module, shut down after it."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture
def sub_env(ray_session) -> dict[str, str]:
    """Environment for CLI subprocesses that should join the session's Ray instead of starting one."""
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_session
    env["RAY_AUTH_MODE"] = "token"
    return env


@pytest.fixture
def btc_small():
    """The bundled BTC series cut to its last ~4,000 hourly bars: enough for short horizons, fast to fit."""
    from hpm_ray.data.datasets import load_btc_hourly
    from hpm_ray.data.io import Series

    s = load_btc_hourly()
    return Series(frame=s.frame.iloc[-4000:].copy(), time_col=s.time_col, price_col=s.price_col)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SANDBOX, ignore_errors=True)
