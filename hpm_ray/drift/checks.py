"""Drift between a model's training reference and a window of served rows (pure: pandas and NumPy).

Per feature: the population stability index (numeric features binned on reference quantiles, categorical
features on categories, unseen categories in one extra bin) and, for numeric features, the two-sample
Kolmogorov-Smirnov statistic with its p-value (SciPy). The same two numbers for the model's predictions.
Drift is declared when any PSI reaches the threshold (seed default 0.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hpm_ray.errors import DataError
from hpm_ray.metrics import psi, psi_counts

DEFAULT_THRESHOLD = 0.2


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic sup|F_a - F_b| and its p-value (``scipy.stats.ks_2samp``, two-sided: exact for
    small samples, asymptotic for large ones)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise DataError("KS needs two non-empty samples")
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI over the reference's categories plus one bin for categories the reference never saw."""
    ref = reference.astype("string").fillna("<NA>")
    cur = current.astype("string").fillna("<NA>")
    cats = pd.Index(ref.unique())
    e = ref.value_counts().reindex(cats, fill_value=0).to_numpy()
    a = cur.value_counts().reindex(cats, fill_value=0).to_numpy()
    unseen = int((~cur.isin(cats)).sum())
    return psi_counts(np.append(e, 0), np.append(a, unseen))


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # "numeric" | "categorical" | "prediction"
    psi: float
    ks: float | None = None
    ks_pvalue: float | None = None
    drifted: bool = False


@dataclass
class DriftResult:
    threshold: float
    n_reference: int
    n_current: int
    features: list[FeatureDrift] = field(default_factory=list)
    prediction: FeatureDrift | None = None

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.features) or bool(self.prediction and self.prediction.drifted)

    @property
    def max_psi(self) -> float:
        values = [f.psi for f in self.features] + ([self.prediction.psi] if self.prediction else [])
        return max(values) if values else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(drifted=self.drifted, max_psi=self.max_psi)
        return d


def _one(name: str, ref: pd.Series, cur: pd.Series, kind: str, threshold: float) -> FeatureDrift:
    if kind == "categorical":
        value = categorical_psi(ref, cur)
        return FeatureDrift(name, kind, value, drifted=value >= threshold)
    r = pd.to_numeric(ref, errors="coerce").dropna().to_numpy()
    c = pd.to_numeric(cur, errors="coerce").dropna().to_numpy()
    if len(r) == 0 or len(c) == 0:
        raise DataError(f"feature {name!r} has no numeric values in the {'reference' if len(r) == 0 else 'window'}")
    value = psi(r, c)
    d, p = ks_two_sample(r, c)
    return FeatureDrift(name, kind, value, d, p, drifted=value >= threshold)


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str] | None = None,
    reference_pred: np.ndarray | None = None,
    current_pred: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = 100,
) -> DriftResult:
    """Compare ``current`` (served rows) with ``reference`` (training rows) feature by feature.

    Refuses windows under ``min_rows`` rows and windows missing a reference feature: a drift verdict on
    too little or the wrong data would trigger (or suppress) a retrain for no reason.
    """
    if threshold <= 0:
        raise DataError(f"drift threshold must be > 0, got {threshold}")
    features = list(features if features is not None else reference.columns)
    if len(current) < min_rows:
        raise DataError(f"only {len(current)} served row(s) in the window; a drift check needs at least {min_rows}")
    if len(reference) < min_rows:
        raise DataError(f"the reference has only {len(reference)} row(s); need at least {min_rows}")
    missing = [f for f in features if f not in current.columns]
    if missing:
        raise DataError(f"served rows lack feature(s) {', '.join(map(repr, missing))} of the model's reference")
    result = DriftResult(threshold, len(reference), len(current))
    for f in features:
        numeric = pd.api.types.is_numeric_dtype(reference[f]) and not pd.api.types.is_bool_dtype(reference[f])
        result.features.append(_one(f, reference[f], current[f], "numeric" if numeric else "categorical", threshold))
    if reference_pred is not None and current_pred is not None:
        result.prediction = _one(
            "prediction", pd.Series(reference_pred), pd.Series(current_pred), "prediction", threshold
        )
    return result
