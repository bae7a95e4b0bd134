"""Runtime: Ray start/join and MLflow locations come from one place and never default to the home folder."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hpm_ray import runtime


def test_default_tracking_uri_is_sqlite_in_runs_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(runtime.RUNS_DIR_ENV, str(tmp_path / "runs"))
    assert runtime.tracking_uri() == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert Path(runtime.tune_storage()).is_relative_to(tmp_path / "runs")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert runtime.tracking_uri() == "http://127.0.0.1:5999"


def test_experiment_artifacts_stay_in_runs_dir(mlflow_uri):
    from mlflow.tracking import MlflowClient

    exp_id = runtime.mlflow_experiment("runtime-test")
    assert runtime.mlflow_experiment("runtime-test") == exp_id  # get-or-create
    loc = MlflowClient(mlflow_uri).get_experiment(exp_id).artifact_location
    assert loc.startswith(runtime.runs_dir().as_uri())


def test_local_ray_is_shared_and_a_subprocess_joins_it(ray_session, sub_env):
    import ray

    assert runtime.init_ray(num_cpus=8)["CPU"] == 2.0  # already running: joined, not restarted
    code = (
        "import json, ray; from hpm_ray.runtime import init_ray; init_ray();"
        "print(json.dumps({'cpu': ray.cluster_resources()['CPU'], 'node': ray.get_runtime_context().get_node_id()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=sub_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"cpu": 2.0, "node": ray.get_runtime_context().get_node_id()}


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_local_ray_listens_on_loopback_only(ray_session):
    """The instance init_ray started: GCS, raylet and object manager answer on 127.0.0.1 and refuse the
    machine's outward address (Ray's default is every interface)."""
    import ray

    assert ray_session.split(":")[0] == "127.0.0.1"
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    assert node["NodeManagerAddress"] == "127.0.0.1"
    ports = [int(ray_session.rsplit(":", 1)[1]), node["NodeManagerPort"], node["ObjectManagerPort"]]
    assert all(_accepts("127.0.0.1", p) for p in ports)
    outward = runtime.own_address()
    if outward is not None:  # a machine with no other interface has nothing else to refuse
        assert not any(_accepts(outward, p) for p in ports)


def test_a_busy_port_is_refused_before_ray_starts_unless_joining_a_cluster(monkeypatch):
    import socket

    import ray

    from hpm_ray.errors import SpecError
    from hpm_ray.runtime import require_free_port

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh CLI process (tests share one Ray)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SpecError, match=f"port {port} on 127.0.0.1 is not available"):
            require_free_port("127.0.0.1", port, None)
        require_free_port("127.0.0.1", port, "auto")  # a cluster's Serve may own the port already
        monkeypatch.setattr(ray, "is_initialized", lambda: True)
        require_free_port("127.0.0.1", port, None)  # so may the Serve of the Ray this process runs
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
    require_free_port("127.0.0.1", port, None)  # free again once the listener is gone


@pytest.mark.parametrize(
    "address, match",
    [
        ("not an address", "expected 'auto', 'host:port' or 'ray://host:port'"),
        ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
    ],
)
def test_a_bad_or_silent_cluster_address_is_refused_in_one_line(address, match):
    from hpm_ray.errors import SpecError

    with pytest.raises(SpecError, match=match):
        runtime._check_reachable(address, timeout=2.0)
