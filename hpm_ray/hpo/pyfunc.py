"""The registered model of one horizon: quantile forecasts and conformal intervals for new feature rows.

The tuned family, any registered learner's models (:class:`QuantileForecaster`), or, when validation chose it, the naive
baseline (:class:`NaiveForecaster`) or a volatility-scaled one (:class:`ScaledForecaster`: EWMA, HAR, its state read
from the row's features): all take the same feature rows and return the same columns.

Input: the feature rows :func:`hpm_ray.data.features.ohlcv_features` builds from OHLCV bars (one row per
bar, with the same windows as training; columns in any order, extra columns dropped), e.g. the forecast
from the latest bar::

    X = ohlcv_features(prepare_series(pd.read_csv("bars.csv")))
    mlflow.pyfunc.load_model("models:/hpm-btc-h48/1").predict(X.tail(1))
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
from mlflow.types.schema import ColSpec, DataType, Schema

from hpm_ray.data.schema import FrameSchema
from hpm_ray.hpo.baselines import ScaledQuantiles
from hpm_ray.hpo.conformal import ConformalQuantiles, rearrange
from hpm_ray.hpo.learners import QuantileModel
from hpm_ray.hpo.lgbm import LightGBMQuantiles
from hpm_ray.hpo.online import METADATA_KEY as ONLINE_KEY
from hpm_ray.hpo.online import OnlineCalibration
from hpm_ray.hpo.trainable import target_scale
from hpm_ray.registry.pyfunc import SchemaPyfunc

FORECAST_KEY = "hpm_ray_forecast"  # {"horizon", "bar_seconds"} in a timestamped forecaster's MLmodel metadata


def bar_seconds_of(train: pd.DataFrame) -> float | None:
    """The median spacing of timestamped training rows in seconds (None without a time index): with the horizon,
    when a forecast's realised value exists."""
    if not isinstance(train.index, pd.DatetimeIndex) or len(train) < 2:
        return None
    step = pd.Series(train.index).diff().median().total_seconds()
    return float(step) if step > 0 else None


def maturity_s(metadata: dict | None) -> float | None:
    """Seconds after a forecast until its realised value exists (horizon x bar), from a version's MLmodel
    metadata; None when the version does not record it (no time index, or registered before).

    Examples
    --------
    >>> maturity_s({FORECAST_KEY: {"horizon": 48, "bar_seconds": 3600.0}})
    172800.0
    """
    d = (metadata or {}).get(FORECAST_KEY)
    return float(d["horizon"]) * float(d["bar_seconds"]) if d else None


class IntervalForecaster(SchemaPyfunc, ABC):
    """Raw quantiles per feature row (``raw``, by subclasses) -> quantiles and CQR intervals.

    Output, one row per input row: ``q_<quantile>`` (rearranged raw quantiles, e.g. ``q_0.05``) and
    ``lo_<level>`` / ``hi_<level>`` (CQR-calibrated central intervals at that nominal coverage in percent, e.g.
    ``lo_90``/``hi_90`` from the 0.05/0.95 pair) of the forward log return over ``horizon`` bars.

    ``online`` (when PID was chosen on calibration) goes into the MLmodel metadata: the A/B app continues PID
    from it with realised values posted as feedback (:mod:`hpm_ray.serving.online`); ``predict`` itself is static.
    ``bar_seconds`` (the training rows' median spacing, when they are timestamped) goes there too, under
    ``FORECAST_KEY`` with the horizon: the A/B app refuses a realised value posted before ``horizon`` bars passed.
    """

    conformal: ConformalQuantiles
    online: OnlineCalibration | None = None
    bar_seconds: float | None = None

    @abstractmethod
    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        """Unrearranged quantile forecasts, one row per conformed feature row, one column per quantile."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        raw = self.raw(self.conform(model_input))
        bounds = [b for lo_hi in self.conformal.intervals(self.conformal.transform(raw)).values() for b in lo_hi]
        return pd.DataFrame(
            np.column_stack([rearrange(raw), *bounds]), columns=self.output_names(), index=model_input.index
        )

    def output_names(self) -> list[str]:
        levels = [round(100 * (1 - a)) for _, _, a in self.conformal.pairs]
        return [f"q_{q:g}" for q in self.conformal.quantiles] + [
            f"{side}_{lv:d}" for lv in levels for side in ("lo", "hi")
        ]

    def output_schema(self) -> Schema:
        return Schema([ColSpec(DataType.double, n) for n in self.output_names()])

    def mlmodel_metadata(self) -> dict:
        out = super().mlmodel_metadata()
        if self.online is not None:
            out[ONLINE_KEY] = self.online.to_dict()
        if self.bar_seconds is not None:
            out[FORECAST_KEY] = {"horizon": self.horizon, "bar_seconds": self.bar_seconds}
        return out

    def _bind(
        self, conformal: ConformalQuantiles, train: pd.DataFrame, horizon: int, online: OnlineCalibration | None
    ) -> None:
        """What every forecaster keeps: CQR margins, the training rows' schema and spacing, horizon, PID start."""
        self.conformal = conformal
        self.schema = FrameSchema.from_frame(train)
        self.horizon = int(horizon)
        self.online = online
        self.bar_seconds = bar_seconds_of(train)

    def __setstate__(self, state: dict) -> None:
        state.setdefault("online", None)  # a version registered before online intervals in serving
        state.setdefault("bar_seconds", None)  # ... or before label maturity
        super().__setstate__(state)


class QuantileForecaster(IntervalForecaster):
    """Holds the tuned learner's quantile model (pickled with it), the fitted CQR margins and the target-scale
    feature. ``features``: the columns the model was fitted on, in order (None: every column of ``train``); the
    input schema keeps every training column, so the tuned model and a baseline take the same feature rows."""

    def __init__(
        self,
        model: QuantileModel,
        conformal: ConformalQuantiles,
        train: pd.DataFrame,
        horizon: int,
        scale_by: str | None = None,
        scale_fill: float = 1.0,
        online: OnlineCalibration | None = None,
        features: list[str] | None = None,
    ):
        self.model = model
        self.scale_by, self.scale_fill = scale_by, float(scale_fill)
        self.features = None if features is None else list(features)
        self._bind(conformal, train, horizon, online)

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        X = (frame if self.features is None else frame[self.features]).to_numpy(dtype=np.float32)
        raw = self.model.predict(X)
        if self.scale_by is not None:  # the models forecast volatility-standardized returns
            raw = raw * target_scale(frame[self.scale_by].to_numpy(), self.horizon, self.scale_fill)[:, None]
        return raw

    def __setstate__(self, state: dict) -> None:
        if "boosters" in state:  # a version registered before learner plug-ins: a list of LightGBM boosters
            state["model"] = LightGBMQuantiles(state.pop("boosters"))
        state.setdefault("features", None)  # ... or before the volatility-state columns: it reads every column
        super().__setstate__(state)


class NaiveForecaster(IntervalForecaster):
    """The naive baseline as a registered model: the same quantiles for every row (of the h-bar returns it was
    fitted on), CQR-calibrated like the tuned model; the feature rows are checked against the training schema.

    Examples
    --------
    >>> import pandas as pd
    >>> cq = ConformalQuantiles([0.05, 0.5, 0.95]).fit(np.tile([-1.0, 0.0, 1.0], (20, 1)), np.zeros(20))
    >>> m = NaiveForecaster(np.array([-1.0, 0.0, 1.0]), cq, pd.DataFrame({"ret_1": [0.0]}), 6)
    >>> m.predict(None, pd.DataFrame({"ret_1": [0.1, 0.2]}))["q_0.95"].tolist()
    [1.0, 1.0]
    """

    def __init__(
        self,
        quantiles: np.ndarray,
        conformal: ConformalQuantiles,
        train: pd.DataFrame,
        horizon: int,
        online: OnlineCalibration | None = None,
    ):
        self.quantiles = np.asarray(quantiles, dtype=float)
        self._bind(conformal, train, horizon, online)

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return np.tile(self.quantiles, (len(frame), 1))


class ScaledForecaster(IntervalForecaster):
    """A volatility-scaled baseline (EWMA, HAR) as a registered model: ``scale(row) x z`` per feature row, its
    scale computed from the row's volatility-state features by the same function the baseline was scored with,
    CQR-calibrated like the tuned model.

    Examples
    --------
    >>> import pandas as pd
    >>> from hpm_ray.hpo.baselines import EwmaScale
    >>> cq = ConformalQuantiles([0.05, 0.5, 0.95]).fit(np.tile([-1.0, 0.0, 1.0], (20, 1)), np.zeros(20))
    >>> model = ScaledQuantiles(EwmaScale(0.94, 4), np.array([-1.5, 0.0, 1.5]))
    >>> m = ScaledForecaster(model, cq, pd.DataFrame({"ewma_vol_0.94": [0.01]}), 4)
    >>> m.predict(None, pd.DataFrame({"ewma_vol_0.94": [0.01, 0.02]}))["q_0.95"].round(6).tolist()  # 1.5 x 2 x vol
    [0.03, 0.06]
    """

    def __init__(
        self,
        model: ScaledQuantiles,
        conformal: ConformalQuantiles,
        train: pd.DataFrame,
        horizon: int,
        online: OnlineCalibration | None = None,
    ):
        self.model = model
        self._bind(conformal, train, horizon, online)

    def raw(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model(frame)
