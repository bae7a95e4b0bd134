"""Log a pyfunc model to the active MLflow run and register it as a new version, metrics attached.

The metrics are stored twice on purpose: on the run (MLflow's charts) and as ``metric.<name>`` tags on the
model version, so quality gates and ``registry list`` read one version without touching its run.
"""

from __future__ import annotations

from importlib import metadata

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from hpm_ray.registry import signature

KIND_TAG = "hpm_ray.kind"  # "classifier" | "quantile_forecaster": selects the quality gates
METRIC_TAG_PREFIX = "metric."
_RUNTIME_PACKAGES = ("numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "mlflow")


def pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned requirements of the serving environment; avoids MLflow's slow requirement inference.

    ``extra``: distributions the model needs beyond hpm-ray's own (an optional student's package).
    """
    return [f"{p}=={metadata.version(p)}" for p in (*_RUNTIME_PACKAGES, *extra)]


def log_and_register(
    python_model: mlflow.pyfunc.PythonModel,
    registered_name: str,
    kind: str,
    metrics: dict[str, float],
    input_example,
    artifacts: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    reference=None,
    extra_packages: tuple[str, ...] = (),
) -> ModelVersion:
    """Log ``python_model`` under the active run, register it, and tag the new version with kind and metrics.

    ``python_model`` (a :class:`~hpm_ray.registry.pyfunc.SchemaPyfunc`) carries its
    :class:`~hpm_ray.data.schema.FrameSchema` as ``.schema``, says what it returns with ``output_schema()`` (an
    MLflow ``Schema``) and what the MLmodel metadata holds with ``mlmodel_metadata()``; ``input_example``
    (training-form rows) becomes the raw input example, and the version gets the signature rendered from the
    schema (:mod:`hpm_ray.registry.signature`), so every MLflow consumer can validate and serve it.
    ``reference`` (feature rows the model was not fitted on, from the training population): a bounded sample
    and the model's outputs on it are stored with the run, the baseline ``hpm-ray drift check`` compares served
    traffic with. Held-out rows, because a model's scores on its own training rows are over-confident, which
    would make the prediction check alarm on any new data.
    ``extra_packages``: installed distributions the model needs beyond hpm-ray's runtime ones, pinned in its
    requirements.
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_and_register needs an active MLflow run")
    if reference is not None:
        from hpm_ray.registry.reference import log_reference

        log_reference(python_model, reference)
    example = signature.input_example(python_model.schema, input_example)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=python_model,
        artifacts=artifacts,
        signature=signature.model_signature(python_model),
        input_example=example,
        metadata=python_model.mlmodel_metadata(),
        pip_requirements=pip_requirements(extra_packages),
    )
    all_tags = {KIND_TAG: kind, **(tags or {})}
    all_tags.update({f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
    # The client API registers without the fluent API's stderr chatter, and tags the version atomically.
    client = MlflowClient()
    try:
        client.create_registered_model(registered_name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    mv = client.create_model_version(
        registered_name,
        source=info.model_uri,
        run_id=mlflow.active_run().info.run_id,
        tags={k: str(v) for k, v in all_tags.items()},
        model_id=info.model_id,
    )
    return client.get_model_version(registered_name, str(mv.version))


def version_metrics(mv: ModelVersion) -> dict[str, float]:
    """The ``metric.*`` tags of a model version as floats."""
    return {
        k[len(METRIC_TAG_PREFIX) :]: float(v) for k, v in (mv.tags or {}).items() if k.startswith(METRIC_TAG_PREFIX)
    }
