"""A model version's drift reference: a bounded sample of held-out rows of its training population and its own
outputs on them.

Stored as a run artifact next to the model (``drift_reference/``), so ``hpm-ray drift check`` compares
served traffic with the population this version was trained on, whichever machine runs the check.
It lives in the registry because :func:`~hpm_ray.registry.models.log_and_register` writes it; the drift
monitor (a layer above) reads it back.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpm_ray.errors import DataError

ARTIFACT = "drift_reference"
MAX_ROWS = 5000


@dataclass(frozen=True)
class Reference:
    features: pd.DataFrame
    outputs: pd.DataFrame  # the model's answer frame (``prediction``, ``proba_*``) row for row


def prediction_score(outputs: pd.DataFrame) -> np.ndarray | None:
    """One number per row to watch for prediction drift: P(last class) for a binary classifier, the top
    probability for a multiclass one, the prediction itself for a regressor; None if nothing numeric."""
    proba = [c for c in outputs.columns if str(c).startswith("proba_")]
    if len(proba) == 2:
        return outputs[proba[-1]].to_numpy(dtype=float)
    if proba:
        return outputs[proba].to_numpy(dtype=float).max(axis=1)
    if "prediction" in outputs.columns and pd.api.types.is_numeric_dtype(outputs["prediction"]):
        return outputs["prediction"].to_numpy(dtype=float)
    return None


def log_reference(python_model, features: pd.DataFrame, max_rows: int = MAX_ROWS, seed: int = 0) -> int:
    """Sample up to ``max_rows`` rows, score them with ``python_model``, log both to the active run."""
    import mlflow

    sample = (
        features.sample(n=min(max_rows, len(features)), random_state=seed) if len(features) > max_rows else features
    )
    sample = sample.reset_index(drop=True)
    out = python_model.predict(None, sample)
    outputs = out if isinstance(out, pd.DataFrame) else pd.DataFrame({"prediction": np.asarray(out)})
    with tempfile.TemporaryDirectory() as tmp:
        sample.to_parquet(Path(tmp) / "features.parquet", index=False)
        outputs.reset_index(drop=True).to_parquet(Path(tmp) / "outputs.parquet", index=False)
        mlflow.log_artifacts(tmp, ARTIFACT)
    return len(sample)


def load_reference(name: str, version: str, client=None) -> Reference:
    """The stored reference of ``name`` v``version``; a version registered without one is a DataError."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    mv = client.get_model_version(name, str(version))
    if not mv.run_id:
        raise DataError(f"{name} v{version} has no run, so no stored drift reference")
    names = {Path(f.path).name for f in client.list_artifacts(mv.run_id, ARTIFACT)}
    if not {"features.parquet", "outputs.parquet"} <= names:
        raise DataError(
            f"{name} v{version} has no stored drift reference (register it with log_and_register(..., reference=held-out rows))"
        )
    # (MLflow's download progress bar: hpm-ray's CLI turns it off for its own process)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(mv.run_id, ARTIFACT, tmp))
        return Reference(pd.read_parquet(local / "features.parquet"), pd.read_parquet(local / "outputs.parquet"))
