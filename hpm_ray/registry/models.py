"""Log a pyfunc model to the active MLflow run and register it as a new version, metrics attached.

The metrics are stored twice on purpose: on the run (MLflow's charts) and as ``metric.<name>`` tags on the
model version, so quality gates and ``registry list`` read one version without touching its run.
"""

from __future__ import annotations

from importlib import metadata

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

KIND_TAG = "hpm_ray.kind"  # "classifier" | "quantile_forecaster": selects the quality gates
METRIC_TAG_PREFIX = "metric."
_RUNTIME_PACKAGES = ("numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "mlflow")


def pip_requirements() -> list[str]:
    """Pinned requirements of the serving environment; avoids MLflow's slow requirement inference."""
    return [f"{p}=={metadata.version(p)}" for p in _RUNTIME_PACKAGES]


def log_and_register(
    python_model: mlflow.pyfunc.PythonModel,
    registered_name: str,
    kind: str,
    metrics: dict[str, float],
    input_example=None,
    artifacts: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
) -> ModelVersion:
    """Log ``python_model`` under the active run, register it, and tag the new version with kind and metrics."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_and_register needs an active MLflow run")
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts=artifacts,
        input_example=input_example,
        pip_requirements=pip_requirements(),
        registered_model_name=registered_name,
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    all_tags = {KIND_TAG: kind, **(tags or {})}
    all_tags.update({f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
    for k, v in all_tags.items():
        client.set_model_version_tag(registered_name, version, k, str(v))
    return client.get_model_version(registered_name, version)


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """The ``metric.*`` tags of a model version as floats."""
    return {k[len(METRIC_TAG_PREFIX):]: float(v) for k, v in (mv.tags or {}).items() if k.startswith(METRIC_TAG_PREFIX)}
