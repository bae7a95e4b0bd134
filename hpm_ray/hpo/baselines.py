"""The forecasters a quant tries first, as quantile forecasts of the h-bar log return, and a Diebold-Mariano test.

Every baseline's state at row t uses 1-bar returns up to t and h-bar labels up to row t - h only. It is scored on
validation exactly as the search scores a trial: on the purged walk-forward folds of the validation block, each
fold forecast with statistics of the rows its fold trains on, the fold scores averaged. Its free setting (window
N, EWMA decay) is chosen on that score; test forecasts then use statistics of train + validation (the tuned model
is refit on the same rows). Scaled baselines forecast ``scale_t * Q(y / scale)``: empirical quantiles of the
standardised h-bar return. :func:`choose_family` then picks what ships by validation pinball.

- naive: unconditional training quantiles of the h-bar return.
- rolling: empirical quantiles of the last N known h-bar returns.
- ewma: EWMA volatility of 1-bar returns (the ``ewma_vol_<decay>`` feature), x sqrt(h).
- har: HAR-RV (Corsi 2009, J. Financial Econometrics 7(2)): the next h bars' realised variance regressed (OLS
  on the training block) on the daily, weekly and monthly averages of realised variance (the ``rv_*`` features).
- garch: GARCH(1,1) with Student-t innovations (``arch``) fitted on training 1-bar returns, filtered forward
  with those parameters, its variance forecasts summed over the next h bars.

EWMA and HAR read their state from the feature row (:mod:`hpm_ray.data.volstate`): their scale
(:class:`EwmaScale`, :class:`HarScale`) is one function of the row, used by the evaluation here and by the registered
model (:class:`hpm_ray.hpo.pyfunc.ScaledForecaster`), so they ship like the tuned model when validation picks them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpm_ray.data.volstate import EWMA_DECAYS, HAR_COLUMNS, MONTH, ewma_column
from hpm_ray.errors import DataError
from hpm_ray.metrics import mean_pinball, pinball_loss, pinball_rows

ROLLING_WINDOWS = (720, 2160, 4320)  # bars: about 1, 3 and 6 months of hourly data


@dataclass(frozen=True)
class Blocks3:
    """Row indices of the training, validation and test blocks (time-ordered, rows are consecutive bars).

    ``folds``: the search's (fit rows, validated rows) pairs over the validation block; none given: one fold,
    (train, validation).
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    @property
    def val_folds(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        return self.folds or ((self.train, self.validation),)


@dataclass(frozen=True)
class EwmaScale:
    """The EWMA baseline's h-bar scale at a row: its ``ewma_vol_<decay>`` feature x sqrt(h) (a random walk)."""

    decay: float
    h: int

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[ewma_column(self.decay)].to_numpy(dtype=float) * math.sqrt(self.h)


@dataclass(frozen=True)
class HarScale:
    """The HAR baseline's h-bar scale at a row: sqrt of ``coef . [1, rv_day, rv_week, rv_month]``, floored at
    ``floor`` (OLS can go negative in a calm stretch); coefficients and floor fitted on the training block."""

    coef: tuple[float, ...]
    floor: float

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        X = frame[list(HAR_COLUMNS)].to_numpy(dtype=float)
        return np.sqrt(np.maximum(self.coef[0] + X @ np.asarray(self.coef[1:]), self.floor))


Scale = Callable[[pd.DataFrame], np.ndarray]  # feature rows -> the h-bar scale at each row


@dataclass(frozen=True)
class ScaledQuantiles:
    """A baseline servable from feature rows: ``scale(row) x z``, with ``z`` the quantiles of the standardised
    h-bar return on the rows it was fitted on."""

    scale: Scale
    z: np.ndarray

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return self.scale(frame)[:, None] * np.asarray(self.z)[None, :]


@dataclass
class Baseline:
    """Test-block quantiles of one baseline, its setting and validation pinball (None: nothing chosen / scored).

    ``model``: what a registered version of it forecasts with (EWMA and HAR; None for the others).
    """

    name: str
    q_test: np.ndarray
    setting: float | None = None
    val_pinball: float | None = None
    model: ScaledQuantiles | None = None


def naive_quantiles(y_train: np.ndarray, quantiles, n: int) -> np.ndarray:
    """The unconditional baseline: training-target quantiles repeated for every row."""
    return np.tile(np.quantile(np.asarray(y_train, dtype=float), quantiles), (n, 1))


def standardised_quantiles(y: np.ndarray, scale: np.ndarray, rows: np.ndarray, quantiles) -> np.ndarray:
    z = y[rows] / scale[rows]
    return np.quantile(z[np.isfinite(z)], quantiles)


def _scaled(y, scale, fit_rows, rows, quantiles) -> np.ndarray:
    return scale[rows, None] * standardised_quantiles(y, scale, fit_rows, quantiles)[None, :]


def rolling_quantiles(y: np.ndarray, rows: np.ndarray, h: int, window: int, quantiles) -> np.ndarray:
    """Quantiles of the labels of rows ``t - h - window + 1 .. t - h`` (all known at t) for each row t of ``rows``."""
    rows = np.asarray(rows)
    last = rows - h  # the newest label known at each row
    if len(rows) and last.min() < 0:
        raise DataError(f"row {rows[last < 0][0]} has no label known {h} bars earlier for a rolling window")
    if not len(rows):
        return np.empty((0, len(quantiles)))
    lo = max(int(last.min()) - window + 1, 0)  # only the stretch the windows cover
    roll = pd.Series(np.asarray(y, dtype=float)[lo : int(last.max()) + 1]).rolling(window, min_periods=1)
    return np.column_stack([roll.quantile(t).to_numpy()[last - lo] for t in quantiles])


def forward_rv(r: np.ndarray, h: int) -> np.ndarray:
    """Realised variance of the next h bars: sum of r_{t+1}^2 .. r_{t+h}^2 (NaN where it runs past the end)."""
    r2 = np.nan_to_num(np.asarray(r, dtype=float) ** 2)
    c = np.concatenate([[0.0], np.cumsum(r2)])
    n = len(r2)
    out = np.full(n, np.nan)
    out[: n - h] = c[h + 1 : n + 1] - c[1 : n - h + 1]
    return out


def fit_har(X: pd.DataFrame, h: int, train: np.ndarray) -> HarScale:
    """OLS of the next h bars' realised variance (of ``X["ret_1"]``) on ``[1, rv_day, rv_week, rv_month]`` over the
    ``train`` rows with a full month of history and a known target."""
    design = np.column_stack([np.ones(len(X)), X[list(HAR_COLUMNS)].to_numpy(dtype=float)])
    target = forward_rv(X["ret_1"].to_numpy(dtype=float), h)
    fit = train[(train + h < len(X)) & (train >= MONTH)]
    if len(fit) < len(HAR_COLUMNS) + 1:
        raise DataError(f"the HAR baseline needs more than {MONTH} training rows, got {len(train)}")
    beta, *_ = np.linalg.lstsq(design[fit], target[fit], rcond=None)
    return HarScale(tuple(float(b) for b in beta), float(np.quantile(target[fit], 0.01)))


def garch_h_variance(sigma2_next: np.ndarray, omega: float, alpha: float, beta: float, h: int) -> np.ndarray:
    """Sum over k = 1..h of the GARCH(1,1) forecast E_t[sigma2_{t+k}] from the one-step forecast ``sigma2_next``.

    ``E_t sigma2_{t+k} = s + phi^(k-1) (sigma2_{t+1} - s)`` with ``phi = alpha + beta`` and ``s = omega / (1 - phi)``.
    """
    phi = alpha + beta
    if phi >= 1.0:  # integrated: no mean reversion, every step forecasts sigma2_{t+1} (plus omega per step)
        return h * sigma2_next + omega * h * (h - 1) / 2
    s = omega / (1.0 - phi)
    return h * s + (sigma2_next - s) * (1.0 - phi**h) / (1.0 - phi)


def garch_scale(r: np.ndarray, h: int, train: np.ndarray) -> np.ndarray:
    """sqrt of the h-bar GARCH(1,1)-t variance forecast at each row, parameters fitted on ``train`` returns."""
    from arch import arch_model

    x = 100.0 * np.nan_to_num(np.asarray(r, dtype=float))  # percent returns: the optimiser's scale
    res = arch_model(x[train], mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    mu, omega, alpha, beta = (float(res.params[k]) for k in ("mu", "omega", "alpha[1]", "beta[1]"))
    s2 = np.empty(len(x))  # s2[t] = sigma2_{t+1 | t}: uses returns up to t
    prev = omega / max(1.0 - alpha - beta, 1e-6)
    for t, v in enumerate(x):
        prev = omega + alpha * (v - mu) ** 2 + beta * prev
        s2[t] = prev
    return np.sqrt(garch_h_variance(s2, omega, alpha, beta, h)) / 100.0


Forecast = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (fit rows, forecast rows) -> quantiles per row


def fold_score(forecast: Forecast, y: np.ndarray, folds, quantiles) -> float:
    """Mean over folds of the fold's mean pinball: how the search scores a trial (``trainable.fit_steps``)."""
    return float(np.mean([mean_pinball(y[va], forecast(fit, va), quantiles) for fit, va in folds]))


def baselines(X: pd.DataFrame, y: np.ndarray, b: Blocks3, h: int, quantiles) -> list[Baseline]:
    """Every baseline's test quantiles and validation pinball; settings chosen by that validation pinball.

    ``X``: the feature rows, one per consecutive bar (``ret_1`` and the states of :mod:`hpm_ray.data.volstate`).
    """
    q, folds = list(quantiles), b.val_folds
    search = np.concatenate([b.train, b.validation])
    score = lambda f: fold_score(f, y, folds, q)

    def best(name: str, options: dict[float, Forecast]) -> Baseline:
        scores = {k: score(f) for k, f in options.items()}
        k = min(scores, key=scores.get)
        return Baseline(name, options[k](search, b.test), k, scores[k])

    def scaled(scale: np.ndarray) -> Forecast:
        return lambda fit, rows: _scaled(y, scale, fit, rows, q)

    def servable(name: str, options: dict[float | None, Scale]) -> Baseline:
        at = {k: scale(X) for k, scale in options.items()}
        scores = {k: score(scaled(v)) for k, v in at.items()}
        k = min(scores, key=scores.get)
        model = ScaledQuantiles(options[k], standardised_quantiles(y, at[k], search, q))
        return Baseline(name, model(X.iloc[b.test]), k, scores[k], model)

    naive: Forecast = lambda fit, rows: naive_quantiles(y[fit], q, len(rows))
    out = [Baseline(NAIVE, naive(search, b.test), None, score(naive))]
    out.append(best("rolling", {float(n): _rolling(y, h, n, q) for n in ROLLING_WINDOWS}))
    out.append(servable("ewma", {lam: EwmaScale(lam, h) for lam in EWMA_DECAYS}))
    out.append(servable("har", {None: fit_har(X, h, b.train)}))
    garch = scaled(garch_scale(X["ret_1"].to_numpy(dtype=float), h, b.train))
    out.append(Baseline("garch", garch(search, b.test), None, score(garch)))
    return out


def _rolling(y: np.ndarray, h: int, window: int, quantiles) -> Forecast:
    return lambda fit, rows: rolling_quantiles(y, rows, h, window, quantiles)


NAIVE = "naive"
BASELINES = (NAIVE, "rolling", "ewma", "har", "garch")  # the names :func:`baselines` returns
# what a chosen baseline needs that no feature row carries: it cannot be registered as a pyfunc over the rows
UNSERVABLE = {
    "rolling": "the empirical quantiles of its last N labels (a window per horizon, quantile and N)",
    "garch": "a GARCH filter run over the whole return history with parameters fitted on the training block",
}


@dataclass(frozen=True)
class Family:
    """What ships per horizon: ``chosen`` has the lowest validation pinball; ``registered`` is what is registered."""

    chosen: str
    registered: str
    reason: str


def choose_family(val_pinball: dict[str, float], tuned: str) -> Family:
    """The family with the lowest validation pinball (ties: a baseline over the tuned model, the simpler wins).

    ``tuned`` names the tuned forecaster's family (its learner's short name: ``lgbm``, ``xgb``). It, naive, EWMA and
    HAR are registered as they were chosen (their state is in the feature row); a chosen family in
    :data:`UNSERVABLE` cannot be registered as a pyfunc over the feature rows, so the best servable family on
    validation is registered instead, and ``reason`` says so.

    Examples
    --------
    >>> choose_family({"lgbm": 0.0125, "naive": 0.0121, "ewma": 0.0123}, tuned="lgbm").registered
    'naive'
    >>> choose_family({"lgbm": 0.0125, "naive": 0.0124, "garch": 0.0122, "har": 0.0123}, tuned="lgbm").registered
    'har'
    """
    ok = {k: v for k, v in val_pinball.items() if v is not None and math.isfinite(v)}
    if tuned not in ok:
        raise DataError("choosing a family needs the tuned forecaster's validation pinball")
    order = lambda k: (ok[k], k == tuned)
    chosen = min(ok, key=order)
    runner_up = min((k for k in ok if k != chosen), key=order, default=None)
    vs = "" if runner_up is None else f" ({ok[chosen]:.6g} vs {runner_up} {ok[runner_up]:.6g})"
    if chosen not in UNSERVABLE:
        what = "the tuned model ships" if chosen == tuned else "the baseline ships, not the tuned model"
        return Family(chosen, chosen, f"{chosen} has the lowest validation pinball{vs}: {what}")
    registered = min((k for k in ok if k not in UNSERVABLE), key=order)
    return Family(
        chosen,
        registered,
        f"{chosen} has the lowest validation pinball{vs} but needs {UNSERVABLE[chosen]}, which no feature row "
        f"carries, so it cannot be registered; registered {registered}, the best servable family on validation "
        f"({ok[registered]:.6g})",
    )


@dataclass(frozen=True)
class DMResult:
    """Diebold-Mariano test of equal expected loss; ``stat < 0``: the first forecaster's loss is lower."""

    stat: float
    pvalue: float
    mean_diff: float
    kernel: str


def dm_test(loss_a: np.ndarray, loss_b: np.ndarray, h: int) -> DMResult:
    """DM statistic of ``loss_a - loss_b`` with a HAC variance of lag h - 1 (h-step losses overlap: MA(h-1)).

    The uniform kernel of Diebold & Mariano (1995) is exact for MA(h-1) differentials; when its variance estimate
    is not positive, the Bartlett (Newey-West) kernel is used instead. Two-sided p-value from N(0, 1).

    Examples
    --------
    >>> r = dm_test(np.array([2.0, 1.0, 3.0, 1.0]), np.array([1.0, 2.0, 1.0, 1.0]), 1)
    >>> round(r.stat, 4), r.kernel  # d = [1, -1, 2, 0]: mean 0.5, variance 1.25, 0.5 / sqrt(1.25 / 4)
    (0.8944, 'uniform')
    """
    import statsmodels.api as sm
    from scipy.stats import norm

    d = np.asarray(loss_a, dtype=float) - np.asarray(loss_b, dtype=float)
    if len(d) < 2 * h + 2:
        raise DataError(f"a Diebold-Mariano test at horizon {h} needs more than {2 * h + 1} rows, got {len(d)}")
    ones = np.ones((len(d), 1))
    for kernel in ("uniform", "bartlett"):
        fit = sm.OLS(d, ones).fit(
            cov_type="HAC", cov_kwds={"maxlags": h - 1, "kernel": kernel, "use_correction": False}
        )
        var = float(fit.cov_params()[0, 0])
        if var > 0:
            stat = float(d.mean() / math.sqrt(var))
            return DMResult(stat, float(2 * norm.sf(abs(stat))), float(d.mean()), kernel)
    return DMResult(0.0, 1.0, float(d.mean()), "none")  # identical losses: no difference to test


def skill(stat: float, pvalue: float, level: float = 0.05) -> str:
    """The outcome of a two-sided DM test at ``level``: "skill", "none" (no evidence) or "worse"."""
    if pvalue < level:
        return "skill" if stat < 0 else "worse"
    return "none"


def verdict(name: str, h: int, dm: DMResult, level: float = 0.05) -> str:
    """One plain line: skill, no evidence of skill, or the baseline wins (two-sided test at ``level``)."""
    p = f"DM {dm.stat:+.2f}, p={dm.pvalue:.3g}"
    outcome = skill(dm.stat, dm.pvalue, level)
    if outcome == "skill":
        return f"skill over {name} at h={h} ({p})"
    if outcome == "worse":
        return f"{name} beats the tuned forecaster at h={h} ({p})"
    return f"no evidence of skill over {name} at h={h} ({p})"


def pinball_by_quantile(y: np.ndarray, q: np.ndarray, quantiles) -> dict[str, float]:
    """Test pinball of each quantile column, keyed by the quantile as written (``"0.05"``)."""
    return {f"{t:g}": pinball_loss(y, q[:, j], t) for j, t in enumerate(quantiles)}


def score_baseline(base: Baseline, y_test: np.ndarray, tuned_loss: np.ndarray, h: int, quantiles) -> dict:
    """The summary entry of one baseline: validation and test pinball (mean and per quantile), and the DM test of
    the tuned forecaster's per-row test loss ``tuned_loss`` against it (whichever family ships: the test asks whether
    tuning bought skill)."""
    dm = dm_test(tuned_loss, pinball_rows(y_test, base.q_test, quantiles), h)
    return {
        "val_pinball": base.val_pinball,
        "test_pinball": mean_pinball(y_test, base.q_test, quantiles),
        "test_pinball_by_quantile": pinball_by_quantile(y_test, base.q_test, quantiles),
        "setting": base.setting,
        "dm_stat": dm.stat,
        "dm_pvalue": dm.pvalue,
        "dm_kernel": dm.kernel,
        "verdict": verdict(base.name, h, dm),
    }
