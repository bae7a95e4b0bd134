"""hpm_ray._compat against the pinned Ray and MLflow: each private name it relies on still exists and still
means what it did. A failure here names the call to port after an upgrade (the fallbacks keep working but lose
what the private call gave)."""

import inspect
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

from hpm_ray import _compat


def test_ray_token_auth_helper_is_where_compat_imports_it():
    from ray._private.authentication import authentication_token_setup as setup

    params = inspect.signature(setup.maybe_enable_token_auth_if_token_available).parameters
    assert "warn_if_disabled" in params


def test_local_ray_on_loopback_switches_the_constant_ray_reads_for_the_node_address():
    from ray._private import ray_constants, services

    before = ray_constants.ENABLE_RAY_CLUSTER
    assert "ray_constants.ENABLE_RAY_CLUSTER" in inspect.getsource(services.get_node_ip_address)
    with _compat.local_ray_on_loopback() as applied:
        assert applied and ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.ENABLE_RAY_CLUSTER == before


@pytest.mark.slow
def test_task_attempt_number_counts_ray_retries(ray_session, tmp_path):
    """0 outside a task and in a first run; 1 after Ray re-ran a task whose worker died."""
    import ray
    from ray._private.worker import global_worker

    assert _compat.task_attempt_number() == 0  # the driver is not a task
    assert hasattr(global_worker.core_worker, "get_current_task_attempt_number")
    marker = tmp_path / "died-once"

    @ray.remote(num_cpus=0, max_retries=1)
    def dies_once(path: str) -> int:
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)  # the worker process dies: a system failure Ray retries
        return _compat.task_attempt_number()

    assert ray.get(dies_once.remote(str(marker))) == 1


def test_serve_controller_still_publishes_target_groups():
    from ray.serve._private.client import ServeControllerClient
    from ray.serve._private.controller import ServeController
    from ray.serve.context import _get_global_client  # noqa: F401 - the import compat makes

    assert "self._controller" in inspect.getsource(ServeControllerClient.__init__)
    assert list(inspect.signature(ServeController.get_target_groups).parameters)[:2] == ["self", "app_name"]


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"prediction": model_input["x"] * 2.0})


def test_python_model_predict_answers_as_the_checked_predict(tmp_path):
    mlflow.pyfunc.save_model(
        str(tmp_path / "m"), python_model=_Doubler(), input_example=pd.DataFrame({"x": [1.0]}), pip_requirements=[]
    )
    model = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    frame = pd.DataFrame({"x": np.arange(5, dtype=float)})
    fast = _compat.python_model_predict(model)
    assert fast != model.predict  # the unwrapped model, not the fallback
    pd.testing.assert_frame_equal(fast(frame), model.predict(frame))


@pytest.mark.slow
def test_python_model_predict_falls_back_for_other_flavors(tmp_path):
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"x": np.arange(6, dtype=float)})
    mlflow.sklearn.save_model(LinearRegression().fit(X, 3 * X.x), str(tmp_path / "sk"), pip_requirements=[])
    model = mlflow.pyfunc.load_model(str(tmp_path / "sk"))
    assert _compat.python_model_predict(model) == model.predict
    np.testing.assert_allclose(_compat.python_model_predict(model)(X), 3 * X.x, atol=1e-9)


@pytest.fixture
def mlflow_globals(monkeypatch):
    """MLflow's module-level URIs, put back after the test."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)


def test_mlflow_uris_are_set_in_process_without_the_environment(mlflow_globals, monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    env = dict(os.environ)
    uri = f"sqlite:///{tmp_path / 'compat.db'}"
    _compat.set_mlflow_uris(uri)
    assert dict(os.environ) == env
    assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri  # what the fluent API resolves
