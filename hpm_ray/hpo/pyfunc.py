"""The registered model of one horizon: quantile forecasts and conformal intervals for new feature rows."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from hpm_ray.hpo.conformal import ConformalQuantiles, rearrange
from hpm_ray.hpo.trainable import target_scale


class QuantileForecaster(mlflow.pyfunc.PythonModel):
    """Holds the per-quantile LightGBM boosters, the fitted CQR margins and the target-scale feature.

    Output, one row per input row: ``q_<quantile>`` (rearranged model quantiles) and ``lo_<level>`` /
    ``hi_<level>`` (CQR-calibrated intervals, e.g. ``lo_90``/``hi_90``) of the forward log return.
    """

    def __init__(self, boosters: list, conformal: ConformalQuantiles, feature_names: list[str], horizon: int,
                 scale_by: str | None = None, scale_fill: float = 1.0):
        self.boosters = boosters
        self.conformal = conformal
        self.feature_names = list(feature_names)
        self.horizon = int(horizon)
        self.scale_by, self.scale_fill = scale_by, float(scale_fill)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        missing = [c for c in self.feature_names if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks feature column(s): {', '.join(missing[:5])}")
        X = model_input[self.feature_names].to_numpy(dtype=np.float32)
        raw = np.column_stack([b.predict(X) for b in self.boosters])
        if self.scale_by is not None:  # the boosters forecast volatility-standardized returns
            raw = raw * target_scale(model_input[self.scale_by].to_numpy(), self.horizon, self.scale_fill)[:, None]
        out = pd.DataFrame(rearrange(raw), columns=[f"q_{q:g}" for q in self.conformal.quantiles], index=model_input.index)
        calibrated = self.conformal.transform(raw)
        for level, (lo, hi) in self.conformal.intervals(calibrated).items():
            out[f"lo_{round(level * 100):d}"] = lo
            out[f"hi_{round(level * 100):d}"] = hi
        return out
