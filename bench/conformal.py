"""hpm-ray's interval methods against MAPIE's time-series intervals, on the same base forecasts and blocks.

Per horizon of the bundled BTC series (or of a finished ``hpm-ray hpo`` run, ``--run OUT_DIR``: its tuned configs
are refit on the run's search rows exactly as the run did), one set of quantile boosters gives the base forecasts;
the calibration and test blocks are the run's. Methods, all with the h-bar label delay (a label is used from
h rows after its own row on), all at 90 %:

- ``pid (default)``: what ``hpm-ray hpo`` ships: conformal PID per volatility tercile, its step chosen on the
  calibration block over every quantile pair, as the run chooses it.
- ``split CQR`` and ``ACI``: hpm-ray's split conformal and fixed-step ACI (``aci_gamma``) on the same quantiles.
- ``MAPIE ACI``: ``mapie.regression.TimeSeriesRegressor(method="aci", cv="prefit")`` around the run's median
  forecast (absolute-residual scores on the calibration block), its gamma chosen on the calibration block by
  interval score from our step grid; ``adapt_conformal_inference`` is fed row t - h before row t is predicted.
- ``MAPIE EnbPI``: ``TimeSeriesRegressor(method="enbpi", cv=BlockBootstrap(...))``: a bootstrap ensemble of
  median LightGBM regressors (same config and rounds) fitted on every row before the test block, out-of-bag
  residuals as scores, ``update`` with the matured rows every h rows (MAPIE's own bootstrap does not purge
  overlapping labels between in- and out-of-bag blocks).

Printed per horizon: coverage, mean width, coverage per volatility tercile (terciles of ``interval_vol`` cut on
the training block), worst rolling 30-day coverage; then the pass criterion of issue 16 (Done-when 3) with its
numbers: the default method is at least as close to 90 % as MAPIE's closest, and narrower than every MAPIE
method that covers at least as much.

    nice -n 10 python bench/conformal.py [--run OUT_DIR] [--horizons 42,48] [--resamplings 10] [--json out.json]

Needs the ``bench`` extra (``pip install -e '.[bench]'``: MAPIE).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALPHA = 0.1
ROLLING_DAYS = 30
# without --run: a moderate fixed configuration (no search), 150 rounds
FIXED = dict(
    learning_rate=0.05,
    num_leaves=15,
    max_depth=-1,
    min_child_samples=100,
    feature_fraction=0.8,
    bagging_fraction=1.0,
    lambda_l1=0.0,
    lambda_l2=1.0,
)


@dataclass
class Row:
    """One method's 90 % intervals on the test block, scored."""

    method: str
    coverage: float
    width: float
    terciles: list
    worst_rolling: float | None
    note: str = ""
    se: float | None = None  # HAC standard error of ``coverage`` (Bartlett, lag h - 1)


def score(method: str, h: int, y, lo, hi, groups, window: int | None, note: str = "") -> Row:
    from hpm_ray.metrics import coverage, group_coverage, group_coverage_se, mean_width, rolling_coverage

    roll = rolling_coverage(y, lo, hi, window) if window else np.empty(0)
    return Row(
        method,
        coverage(y, lo, hi),
        mean_width(lo, hi),
        group_coverage(y, lo, hi, groups, 3),
        float(roll.min()) if len(roll) else None,
        note,
        group_coverage_se(y, lo, hi, np.zeros(len(y), dtype=int), 1, h - 1)[0],
    )


def criterion(ours: Row, peers: list[Row], target: float = 1 - ALPHA) -> tuple[bool, str]:
    """Done-when 3: at least as close to ``target`` as the closest peer, narrower than every peer covering as much.

    Examples
    --------
    >>> a, b = Row("pid", 0.895, 0.15, [], None), Row("aci", 0.91, 0.16, [], None)
    >>> criterion(a, [b])[0]
    True
    """
    best = min(peers, key=lambda r: abs(r.coverage - target))
    close = abs(ours.coverage - target) <= abs(best.coverage - target) + 1e-12
    covering = [r for r in peers if r.coverage >= ours.coverage]
    wider = [r for r in covering if r.width > ours.width]
    narrow = len(wider) == len(covering)
    text = (
        f"|cov - {target:g}| {abs(ours.coverage - target):.4f} vs MAPIE's closest ({best.method}) "
        f"{abs(best.coverage - target):.4f}: {'ok' if close else 'FAIL'}; narrower than every MAPIE method "
        f"covering >= {ours.coverage:.4f} ("
        + (", ".join(f"{r.method} {r.width:.4f}" for r in covering) or "none covers as much")
        + f") at {ours.width:.4f}: {'ok' if narrow else 'FAIL'}"
    )
    return close and narrow, text


class RowLookup:
    """A fitted scikit-learn regressor whose input is a row number: MAPIE then wraps exactly our median forecast."""

    def __init__(self, median: np.ndarray | None = None):
        self.median = median
        self.fitted_ = median is not None  # what MAPIE's fitted check looks for

    def fit(self, X, y):  # cv="prefit": never called
        raise NotImplementedError

    def predict(self, X):
        return self.median[np.asarray(X, dtype=int)[:, 0]]

    def get_params(self, deep: bool = True) -> dict:
        return {"median": self.median}

    def set_params(self, **params):
        self.__init__(**params)
        return self


def mapie_aci(median: np.ndarray, y: np.ndarray, cal: np.ndarray, target: np.ndarray, h: int, gamma: float):
    """(lo, hi) of MAPIE's ACI along ``target`` rows, conformity scores from ``cal`` rows; row t - h adapts row t."""
    from mapie.regression import TimeSeriesRegressor

    model = TimeSeriesRegressor(RowLookup(median), method="aci", cv="prefit")
    model.fit(cal[:, None], y[cal])
    lo, hi = np.empty(len(target)), np.empty(len(target))
    for k, t in enumerate(target):
        if k >= h:
            model.adapt_conformal_inference(
                np.array([[target[k - h]]]), y[[target[k - h]]], gamma=gamma, confidence_level=1 - ALPHA
            )
        _, pis = model.predict(np.array([[t]]), confidence_level=1 - ALPHA, allow_infinite_bounds=True)
        lo[k], hi[k] = pis[0, 0, 0], pis[0, 1, 0]
    # alpha_t <= 0 gives an infinite interval: report it at the widest finite one so widths stay comparable
    finite = np.isfinite(lo) & np.isfinite(hi)
    if not finite.all():
        lo[~finite], hi[~finite] = np.min(lo[finite]), np.max(hi[finite])
    return lo, hi


def mapie_enbpi(X, y, fit_rows, test_rows, h, params: dict, rounds: int, resamplings: int, seed: int):
    """(lo, hi) of MAPIE's EnbPI on ``test_rows``; matured test rows update the scores every h rows."""
    from lightgbm import LGBMRegressor
    from mapie.regression import TimeSeriesRegressor
    from mapie.subsample import BlockBootstrap

    est = LGBMRegressor(n_estimators=rounds, **params)
    cv = BlockBootstrap(n_resamplings=resamplings, length=max(h, 24 * 7), overlapping=False, random_state=seed)
    model = TimeSeriesRegressor(est, method="enbpi", cv=cv, agg_function="mean", n_jobs=1)
    model.fit(X[fit_rows], y[fit_rows])
    lo, hi = np.empty(len(test_rows)), np.empty(len(test_rows))
    for s in range(0, len(test_rows), h):
        if s >= 2 * h:  # rows [s - 2h, s - h) matured since the previous chunk
            new = test_rows[s - 2 * h : s - h]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="(?s).*behavior has been changed")
                model.update(X[new], y[new], ensemble=True)
        chunk = test_rows[s : s + h]
        _, pis = model.predict(X[chunk], confidence_level=1 - ALPHA, ensemble=True, allow_infinite_bounds=True)
        lo[s : s + len(chunk)], hi[s : s + len(chunk)] = pis[:, 0, 0], pis[:, 1, 0]
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="output folder of a finished hpm-ray hpo run: replay its tuned configs")
    ap.add_argument("--horizons", help="comma-separated subset of the horizons")
    ap.add_argument("--resamplings", type=int, default=10, help="EnbPI bootstrap models per horizon")
    ap.add_argument("--mapie-gammas", default="0.005,0.01,0.05", help="MAPIE ACI's gamma grid (chosen on calibration)")
    ap.add_argument("--max-rows", type=int, help="keep only the last N bars (a quick smoke run)")
    ap.add_argument("--json", type=Path, help="write the table as JSON here")
    a = ap.parse_args()

    from hpm_ray.config import load_spec
    from hpm_ray.hpo.conformal import quantile_pairs, rearrange
    from hpm_ray.hpo.intervals import Block, choose, intervals
    from hpm_ray.hpo.learners import get_learner
    from hpm_ray.hpo.runner import interval_plan, load_series, prepare_horizon, rows_per_days
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.metrics import interval_score

    summary = json.loads((a.run / "summary.json").read_text()) if a.run else None
    spec = load_spec(HPOSpec, None, json.loads((a.run / "run.json").read_text())["spec"]) if a.run else HPOSpec()
    if a.max_rows:
        spec = spec.model_copy(update={"max_rows": a.max_rows})
    horizons = [int(h) for h in a.horizons.split(",")] if a.horizons else spec.horizons
    series, q = load_series(spec), list(spec.quantiles)
    if spec.learner != "lightgbm":  # MAPIE's EnbPI below refits LightGBM with the run's parameters
        raise SystemExit(f"bench/conformal.py compares LightGBM runs; this run's learner is {spec.learner}")
    learner = get_learner(spec.learner)
    qp = quantile_pairs(q)
    lo_col, hi_col = next((i, j) for i, j, a in qp if a == ALPHA)
    results, verdicts = {}, {}
    gammas = [float(v) for v in a.mapie_gammas.split(",")]
    print(f"base forecasts: {'tuned configs of ' + str(a.run) if a.run else 'a fixed LightGBM config'}; 90 % intervals")
    print("| h | method | cov90 (HAC SE) | width90 | cov90 calm / mid / volatile | worst 30-day cov90 | seconds |")
    print("|---|---|---|---|---|---|---|")
    for h in horizons:
        t0 = time.time()
        hz = prepare_horizon(series, h, spec)
        d, b, plan = hz.data, hz.blocks, interval_plan(hz, spec)
        if summary:
            cfg = summary["horizons"][str(h)]["best_params"]
            rounds = summary["details"][str(h)]["best_rounds"]
        else:
            cfg, rounds = FIXED, 150
        model = learner.start(cfg, d.X[b.search], d.y[b.search] / d.scale[b.search], q, spec.seed)
        model.grow(rounds)
        q_cal = rearrange(model.predict(d.X[b.calibration]) * d.scale[b.calibration, None])
        q_test = rearrange(model.predict(d.X[b.test]) * d.scale[b.test, None])
        y, y_test = d.y, d.y[b.test]
        # the step is chosen as the run chooses it: mean calibration interval score over every quantile pair
        pairs = {a: Block(q_cal[:, i], q_cal[:, j], y[b.calibration], plan.vol_cal, plan.groups_cal) for i, j, a in qp}
        cal = pairs[ALPHA]
        test = Block(q_test[:, lo_col], q_test[:, hi_col], y_test, plan.vol_test, plan.groups_test)
        window = rows_per_days(hz.X.index, ROLLING_DAYS)
        g = plan.groups_test
        choice = choose(pairs, h, plan.methods, list(plan.steps), plan.settings)
        rows = [
            score(
                "pid (default)",
                h,
                y_test,
                *intervals(choice.method, choice.step, cal, test, ALPHA, h, plan.settings),
                g,
                window,
                choice.label,
            ),
            score("split CQR", h, y_test, *intervals("cqr", None, cal, test, ALPHA, h), g, window),
            score("ACI", h, y_test, *intervals("aci", spec.aci_gamma, cal, test, ALPHA, h), g, window),
        ]
        # MAPIE ACI: gamma chosen like our step, on the calibration block's halves by interval score
        median = np.empty(len(y))
        med_col = q.index(0.5)
        median[b.calibration], median[b.test] = q_cal[:, med_col], q_test[:, med_col]
        half = len(b.calibration) // 2
        past, later = b.calibration[: half - h], b.calibration[half:]
        gscore = {gm: interval_score(y[later], *mapie_aci(median, y, past, later, h, gm), ALPHA) for gm in gammas}
        gamma = min(gscore, key=gscore.get)
        rows.append(
            score(
                "MAPIE ACI",
                h,
                y_test,
                *mapie_aci(median, y, b.calibration, b.test, h, gamma),
                g,
                window,
                f"gamma={gamma:g}",
            )
        )
        fit_rows = np.concatenate([b.search, b.calibration])
        params = {k: v for k, v in learner.params(cfg, 0.5, spec.seed).items() if k != "num_threads"} | {"n_jobs": 1}
        rows.append(
            score(
                "MAPIE EnbPI",
                h,
                y_test,
                *mapie_enbpi(d.X, y, fit_rows, b.test, h, params, rounds, a.resamplings, spec.seed),
                g,
                window,
                f"{a.resamplings} bootstrap models",
            )
        )
        secs = time.time() - t0
        for r in rows:
            terc = " / ".join("-" if v is None else f"{v:.3f}" for v in r.terciles)
            worst = "-" if r.worst_rolling is None else f"{r.worst_rolling:.3f}"
            label = r.method + (f" ({r.note})" if r.note else "")
            print(
                f"| {h} | {label} | {r.coverage:.4f} ({r.se:.3f}) | {r.width:.4f} | {terc} | {worst} | {secs:.0f} |",
                flush=True,
            )
        ok, text = criterion(rows[0], [r for r in rows if r.method.startswith("MAPIE")])
        verdicts[h] = (ok, text)
        results[str(h)] = {"rows": [r.__dict__ for r in rows], "pass": ok, "criterion": text}
    print(
        "\nPass criterion (issue 16, Done-when 3): the default method is at least as close to 90 % as MAPIE's closest"
    )
    print("method, and narrower than every MAPIE method whose coverage is at least its own, on every horizon.")
    for h, (ok, text) in verdicts.items():
        print(f"h={h}: {'PASS' if ok else 'FAIL'}: {text}")
    print(f"overall: {'PASS' if all(ok for ok, _ in verdicts.values()) else 'FAIL'}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
