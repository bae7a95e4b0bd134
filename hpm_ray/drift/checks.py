"""Drift between a model's training reference and a window of served rows (pure: pandas, NumPy, SciPy).

Per feature, one effect size and up to two tests:

- PSI over reference quantile bins (numeric) or categories (categorical), plus one bin for categories the
  reference never saw and one for missing values;
- the missing rate: Fisher's exact test, reference vs window;
- the present values: two-sample Kolmogorov-Smirnov (numeric) or Pearson's chi-square on category counts
  (categorical: non-numeric and boolean columns, declared columns, and integer codes with at most
  ``max_categories`` distinct values in the reference).

The model's prediction score gets the numeric treatment. All p-values of one window are corrected together
with Benjamini-Hochberg, and a feature drifts when one of its tests is rejected at ``fdr`` *and* its PSI
reaches ``threshold``. With no drift every hypothesis is true, so BH's false discovery rate is the chance of
any rejection: a no-drift window raises an alarm with probability at most ``fdr`` (proved for independent or
positively dependent tests; ``tests/test_drift_calibration.py`` measures it on the correlated credit
features). The PSI floor keeps a large window from alarming on a shift too small to matter; it can only
lower the false-alarm rate. The prediction check is only as good as its reference: scores on rows the model
was trained on are more confident than on new rows, so they should come from held-out rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hpm_ray.errors import DataError
from hpm_ray.metrics import psi, psi_counts

DEFAULT_THRESHOLD = 0.1  # PSI floor: a 20-point move of one category's share gives about 0.16
DEFAULT_FDR = 0.05
MAX_CATEGORIES = 20
MIN_EXPECTED = 5.0  # Cochran's rule for the chi-square approximation


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample KS statistic sup|F_a - F_b| and its p-value (``scipy.stats.ks_2samp``, two-sided: exact for
    small samples, asymptotic for large ones; conservative when values tie)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise DataError("KS needs two non-empty samples")
    res = stats.ks_2samp(a, b)
    return float(res.statistic), float(res.pvalue)


def missing_rate_pvalue(missing_ref: int, n_ref: int, missing_cur: int, n_cur: int) -> float | None:
    """Two-sided Fisher exact test that the reference and the window share one missing rate.

    None when no value, or every value, is missing in both: the test conditions on that total, so there is
    only one possible table (p = 1), and counting it would only dilute the correction across features.
    """
    total = missing_ref + missing_cur
    if total == 0 or total == n_ref + n_cur:
        return None
    table = [[missing_ref, n_ref - missing_ref], [missing_cur, n_cur - missing_cur]]
    return float(stats.fisher_exact(table).pvalue)


def chi2_pvalue(expected_counts: np.ndarray, actual_counts: np.ndarray, min_expected: float = MIN_EXPECTED):
    """Pearson chi-square p-value that two samples of categories share one distribution (a 2 x k table).

    Sparse categories are grouped first so the chi-square approximation holds: walking from the rarest up,
    a group closes once it is expected ``min_expected`` times in the smaller sample, and a sparse remainder
    joins the last group. The grouping reads only the column totals, which the test conditions on, so it
    does not bias the p-value. None when fewer than two groups are left.
    """
    e, a = np.asarray(expected_counts, dtype=float), np.asarray(actual_counts, dtype=float)
    n, m = e.sum(), a.sum()
    if n == 0 or m == 0:
        return None
    scale = min(n, m) / (n + m)  # pooled count -> expected count in the smaller sample
    groups: list[list[int]] = []
    current: list[int] = []
    for j in np.argsort(e + a, kind="stable"):
        current.append(j)
        if scale * (e[current].sum() + a[current].sum()) >= min_expected:
            groups.append(current)
            current = []
    if current and groups:
        groups[-1] += current
    if len(groups) < 2:
        return None
    table = np.array([[e[g].sum() for g in groups], [a[g].sum() for g in groups]])
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _floats(s: pd.Series) -> np.ndarray:
    """Values as floats, NaN for missing ones and for anything that is not a number."""
    return (s if _is_numeric(s) else pd.to_numeric(s, errors="coerce")).to_numpy(dtype=float, na_value=np.nan)


def _few_codes(values: np.ndarray, max_categories: int) -> bool:
    codes = np.unique(values[~np.isnan(values)])
    return 0 < len(codes) <= max_categories and bool(np.all(codes == np.round(codes)))


def is_categorical(reference: pd.Series, max_categories: int = MAX_CATEGORIES) -> bool:
    """Whether a reference column is compared by category rather than on quantile bins.

    Non-numeric and boolean columns are; numeric ones are when their reference values are whole numbers
    with at most ``max_categories`` distinct values (codes such as education level or months in arrears:
    quantile bins would merge a two-valued column into one bin and treat codes as magnitudes).
    """
    return not _is_numeric(reference) or _few_codes(_floats(reference), max_categories)


def _code_counts(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r_nan, c_nan = np.isnan(r), np.isnan(c)
    cats, e = np.unique(r[~r_nan], return_counts=True)
    present = c[~c_nan]
    pos = np.minimum(np.searchsorted(cats, present), max(len(cats) - 1, 0))
    seen = cats[pos] == present if len(cats) else np.zeros(len(present), dtype=bool)
    a = np.bincount(pos[seen], minlength=len(cats))
    return np.append(e, [0, r_nan.sum()]), np.append(a, [(~seen).sum(), c_nan.sum()])


def _label_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = reference.astype("string"), current.astype("string")
    cats = pd.Index(ref.dropna().unique())
    e = ref.value_counts().reindex(cats, fill_value=0).to_numpy()
    a = cur.value_counts().reindex(cats, fill_value=0).to_numpy()
    unseen = int((cur.notna() & ~cur.isin(cats)).sum())
    return np.append(e, [0, ref.isna().sum()]), np.append(a, [unseen, cur.isna().sum()])


def category_counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Aligned counts over the reference's categories, then categories it never saw, then missing values.

    Keys follow the reference's type: numeric codes compare as numbers (1 and 1.0 match; a served value that
    is not a number counts as missing), anything else as strings.
    """
    if _is_numeric(reference):
        return _code_counts(_floats(reference), _floats(current))
    return _label_counts(reference, current)


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI over the reference's categories plus one bin for unseen categories and one for missing values."""
    return psi_counts(*category_counts(reference, current))


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # "numeric" | "categorical" | "prediction"
    psi: float
    ks: float | None = None
    ks_pvalue: float | None = None
    chi2_pvalue: float | None = None
    missing_reference: float = 0.0  # share of missing values
    missing_current: float = 0.0
    missing_pvalue: float | None = None
    q_value: float | None = None  # smallest Benjamini-Hochberg adjusted p-value of this feature's tests
    drifted: bool = False

    @property
    def pvalues(self) -> list[float]:
        return [p for p in (self.ks_pvalue, self.chi2_pvalue, self.missing_pvalue) if p is not None]


@dataclass
class DriftResult:
    threshold: float
    n_reference: int
    n_current: int
    features: list[FeatureDrift] = field(default_factory=list)
    prediction: FeatureDrift | None = None
    fdr: float = DEFAULT_FDR

    @property
    def checked(self) -> list[FeatureDrift]:
        """The features, then the prediction score if it was checked."""
        return self.features + ([self.prediction] if self.prediction else [])

    @property
    def drifted(self) -> bool:
        return any(f.drifted for f in self.checked)

    @property
    def max_psi(self) -> float:
        return max((f.psi for f in self.checked), default=0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(drifted=self.drifted, max_psi=self.max_psi)
        return d


def _one(name: str, ref: pd.Series, cur: pd.Series, kind: str | None, max_categories: int) -> FeatureDrift:
    """One feature's PSI and tests; ``kind`` None: categorical or numeric as :func:`is_categorical` says."""
    if _is_numeric(ref):
        r, c = ref.to_numpy(dtype=float, na_value=np.nan), _floats(cur)
        kind = kind or ("categorical" if _few_codes(r, max_categories) else "numeric")
        if kind != "categorical":
            r_ok, c_ok = r[~np.isnan(r)], c[~np.isnan(c)]
            ks, p = ks_two_sample(r_ok, c_ok) if len(r_ok) and len(c_ok) else (None, None)
            f = FeatureDrift(name, kind, psi(r, c), ks, p)
            return _with_missing(f, len(r) - len(r_ok), len(r), len(c) - len(c_ok), len(c))
        e, a = _code_counts(r, c)
    else:
        e, a = _label_counts(ref, cur)
    f = FeatureDrift(name, "categorical", psi_counts(e, a), chi2_pvalue=chi2_pvalue(e[:-1], a[:-1]))
    return _with_missing(f, int(e[-1]), int(e.sum()), int(a[-1]), int(a.sum()))


def _with_missing(f: FeatureDrift, missing_ref: int, n_ref: int, missing_cur: int, n_cur: int) -> FeatureDrift:
    f.missing_reference, f.missing_current = missing_ref / n_ref, missing_cur / n_cur
    f.missing_pvalue = missing_rate_pvalue(missing_ref, n_ref, missing_cur, n_cur)
    return f


def _decide(result: DriftResult) -> None:
    """Benjamini-Hochberg over every p-value of the window, then the alarm rule per feature."""
    checked = result.checked
    owner = [i for i, f in enumerate(checked) for _ in f.pvalues]
    if owner:
        adjusted = stats.false_discovery_control([p for f in checked for p in f.pvalues], method="bh")
        for i, q in zip(owner, adjusted, strict=True):
            prev = checked[i].q_value
            checked[i].q_value = float(q) if prev is None else min(prev, float(q))
    for f in checked:
        f.drifted = f.q_value is not None and f.q_value <= result.fdr and f.psi >= result.threshold


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str] | None = None,
    reference_pred: np.ndarray | None = None,
    current_pred: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = 100,
    *,
    fdr: float = DEFAULT_FDR,
    categorical: Iterable[str] = (),
    max_categories: int = MAX_CATEGORIES,
) -> DriftResult:
    """Compare ``current`` (served rows) with ``reference`` (training rows) feature by feature.

    Parameters
    ----------
    reference, current
        Training reference and served window; ``features`` (default: the reference's columns) must be in both.
    reference_pred, current_pred
        The model's scores on reference rows (held-out ones, ideally) and on the window: checked as one more
        numeric feature when both are given.
    threshold
        PSI a feature must reach to drift: the size of shift worth acting on.
    min_rows
        Windows (and references) with fewer rows are refused: a verdict on too little data would trigger
        (or suppress) a retrain for no reason.
    fdr
        Benjamini-Hochberg level over all the window's tests, and so the false-alarm rate of a no-drift window.
    categorical
        Features to compare by category whatever their type.
    max_categories
        Integer columns with at most this many distinct reference values are categorical too (0: never).

    Returns
    -------
    DriftResult
        Per-feature PSI, p-values, missing rates and BH q-values; ``drifted`` is the alarm.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ref = pd.DataFrame({"x": rng.normal(size=2000), "grade": rng.choice(["A", "B"], 2000)})
    >>> cur = pd.DataFrame({"x": rng.normal(size=1000), "grade": rng.choice(["A", "B"], 1000, p=[0.7, 0.3])})
    >>> cur.loc[:499, "x"] = np.nan  # half missing
    >>> [(f.feature, f.kind, f.drifted) for f in check_drift(ref, cur).features]
    [('x', 'numeric', True), ('grade', 'categorical', True)]
    """
    if threshold <= 0:
        raise DataError(f"drift threshold must be > 0, got {threshold}")
    if not 0 < fdr < 1:
        raise DataError(f"the false-alarm rate (fdr) must be in (0, 1), got {fdr}")
    features = list(features if features is not None else reference.columns)
    if len(current) < min_rows:
        raise DataError(f"only {len(current)} served row(s) in the window; a drift check needs at least {min_rows}")
    if len(reference) < min_rows:
        raise DataError(f"the reference has only {len(reference)} row(s); need at least {min_rows}")
    missing = [f for f in features if f not in current.columns]
    if missing:
        raise DataError(f"served rows lack feature(s) {', '.join(map(repr, missing))} of the model's reference")
    declared = set(categorical)
    unknown = sorted(declared - set(features))
    if unknown:
        raise DataError(f"categorical feature(s) {', '.join(map(repr, unknown))} are not features of the model")
    result = DriftResult(threshold, len(reference), len(current), fdr=fdr)
    for f in features:
        kind = "categorical" if f in declared else None
        result.features.append(_one(f, reference[f], current[f], kind, max_categories))
    if reference_pred is not None and current_pred is not None:
        pred = pd.Series(reference_pred), pd.Series(current_pred)
        result.prediction = _one("prediction", *pred, "prediction", max_categories)
    _decide(result)
    return result
