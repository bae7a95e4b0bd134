"""``run_hpo``: data per horizon -> concurrent Tune searches -> refit, CQR, test scores -> MLflow, summary, report.

The driver only orchestrates: searches and refits run as Ray tasks, the driver logs to MLflow and writes files,
so a run on a remote cluster differs only in the address.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpm_ray.config import load_spec
from hpm_ray.data.features import make_supervised
from hpm_ray.data.io import Series
from hpm_ray.data.splitters import Blocks, PurgedWalkForward
from hpm_ray.data.volstate import STATE_COLUMNS
from hpm_ray.errors import DataError, HPMError, SpecError
from hpm_ray.hpo.conformal import finite_sample_level, quantile_pairs
from hpm_ray.hpo.intervals import METHODS, IntervalPlan, Settings, candidates, min_calibration_rows
from hpm_ray.hpo.learners import get_learner
from hpm_ray.hpo.online import check_vol
from hpm_ray.hpo.spec import HPOSpec
from hpm_ray.hpo.trainable import METRIC, SearchData, target_scale
from hpm_ray.metrics import rolling_coverage, tercile_cuts

STATE_FILE = "run.json"
ROLLING_DAYS = 30  # the window of the report's rolling coverage


@dataclass
class Horizon:
    """One horizon's supervised table, its purged blocks and the search data trials read."""

    h: int
    X: pd.DataFrame
    y: pd.Series
    blocks: Blocks
    data: SearchData  # its ``X``: the :func:`learner_features` columns
    vol: np.ndarray  # ``spec.interval_vol`` at every row (known at t)
    vol_cuts: np.ndarray  # its terciles on the training block


def load_series(spec: HPOSpec) -> Series:
    from hpm_ray.data.datasets import load_btc_hourly
    from hpm_ray.data.io import prepare_series, read_table

    series = (
        load_btc_hourly() if spec.data is None else prepare_series(read_table(spec.data), spec.time_col, spec.price_col)
    )
    if spec.max_rows is not None and len(series.frame) > spec.max_rows:
        series = Series(series.frame.iloc[-spec.max_rows :], series.time_col, series.price_col)
    return series


def prepare_horizon(series: Series, h: int, spec: HPOSpec) -> Horizon:
    """Features/target for horizon ``h`` and its train | validation | calibration | test blocks; checks sizes."""
    X, y = make_supervised(series, h)
    splitter = PurgedWalkForward(h, spec.embargo, tuple(spec.fractions))
    blocks = splitter.blocks(len(X))
    for name, size in blocks.sizes().items():
        if size <= h:
            raise DataError(
                f"horizon {h} bars is longer than the {name} block ({size} rows); use a shorter horizon or more data"
            )
    n_cal = len(blocks.calibration)
    for i, _, alpha in quantile_pairs(spec.quantiles):
        if finite_sample_level(n_cal, alpha) > 1:  # CQR would need an infinite interval
            raise DataError(
                f"the calibration block has {n_cal} rows, too few for the {spec.quantiles[i]:g} quantile "
                f"pair (needs {math.ceil((1 - alpha) / alpha - 1e-9)}); use more data or less extreme quantiles"
            )
    if len(candidates(_interval_methods(spec), spec.step_sizes)) > 1 and n_cal < min_calibration_rows(h):
        raise DataError(
            f"the calibration block has {n_cal} rows, too few to choose an interval method for horizon {h} "
            f"(needs {min_calibration_rows(h)}); use more data, or one interval_method and one step size"
        )
    vol = interval_vol(X, spec, blocks)
    folds = splitter.folds(len(X), spec.n_folds)
    data = SearchData(
        X=X[learner_features(X)].to_numpy(dtype=np.float32),
        y=y.to_numpy(dtype=float),
        scale=scale_rows(X, h, spec, blocks)[0],
        folds=tuple(folds),
        quantiles=tuple(spec.quantiles),
        max_rounds=spec.max_rounds,
        report_every=spec.report_every,
        seed=spec.seed,
        learner=get_learner(spec.learner),
    )
    return Horizon(h, X, y, blocks, data, vol, tercile_cuts(vol[blocks.train]))


def learner_features(X: pd.DataFrame) -> list[str]:
    """The columns the tuned learner fits on: all but the baselines' volatility states. The learner has rolling
    volatilities already; with the seven state columns a 60-round fit of the default configuration on 4,000 BTC
    bars (h=6) took ~20 % longer and scored no better on validation (0.005784 vs 0.005762)."""
    return [c for c in X.columns if c not in STATE_COLUMNS]


def _interval_methods(spec: HPOSpec) -> tuple[str, ...]:
    return METHODS if spec.interval_method == "auto" else (spec.interval_method,)


def interval_vol(X: pd.DataFrame, spec: HPOSpec, blocks: Blocks) -> np.ndarray:
    """The ``interval_vol`` feature; it must be positive and finite on every train, calibration and test row."""
    if spec.interval_vol not in X.columns:
        raise SpecError(
            f"interval_vol: no feature named {spec.interval_vol!r}; features are {', '.join(X.columns[:8])}, ..."
        )
    v = X[spec.interval_vol].to_numpy(dtype=float)
    rows = np.concatenate([blocks.train, blocks.calibration, blocks.test])
    check_vol(v[rows], len(rows), f"interval_vol {spec.interval_vol!r}")
    return v


def interval_plan(hz: Horizon, spec: HPOSpec) -> IntervalPlan:
    b, groups = hz.blocks, np.digitize(hz.vol, hz.vol_cuts)
    return IntervalPlan(
        _interval_methods(spec),
        tuple(spec.step_sizes),
        Settings(spec.pid_normalize, spec.pid_by_tercile, spec.pid_integrator),
        hz.vol[b.calibration],
        hz.vol[b.test],
        groups[b.calibration],
        groups[b.test],
        spec.interval_vol,
        tuple(float(c) for c in hz.vol_cuts),
    )


def rows_per_days(index: pd.Index, days: float) -> int | None:
    """Bars in ``days`` days at the index's median spacing (None without a time index)."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return None
    step = pd.Series(index).diff().median()
    return max(1, round(pd.Timedelta(days=days) / step))


def scale_rows(X: pd.DataFrame, h: int, spec: HPOSpec, blocks: Blocks) -> tuple[np.ndarray, float]:
    """The target scale of every row and the fill value for undefined ones (median over the train block)."""
    if spec.scale_by is None:
        return np.ones(len(X)), 1.0
    if spec.scale_by not in X.columns:
        raise SpecError(f"scale_by: no feature named {spec.scale_by!r}; features are {', '.join(X.columns[:8])}, ...")
    v = X[spec.scale_by].to_numpy(dtype=float)
    ok = v[blocks.train]  # not the validation block: folds validate on it
    fill = float(np.median(ok[np.isfinite(ok) & (ok > 0)]))
    return target_scale(v, h, fill), fill


def _save_state(out: Path, state: dict) -> None:
    (out / STATE_FILE).write_text(json.dumps(state, indent=2))


def _start_state(spec: HPOSpec, out: Path, resume: bool, given: frozenset = frozenset()) -> tuple[HPOSpec, dict]:
    """A new run id, or on ``resume`` the interrupted run's id and spec (its trial budget and search space).

    ``given``: settings the user set explicitly; on resume they must match the saved run (they cannot change it).
    """
    path = out / STATE_FILE
    if resume:
        if not path.is_file():
            raise SpecError(f"--resume: no interrupted run in {out} (missing {STATE_FILE})")
        try:
            state = json.loads(path.read_text())
            saved = load_spec(HPOSpec, None, state["spec"])
            missing = {"run_id", "mlflow_run_id"} - set(state)
        except HPMError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            missing = {type(exc).__name__}
        if missing:
            raise SpecError(
                f"--resume: {path} is damaged ({', '.join(sorted(missing))}); start a new run with another --out"
            )
        changed = sorted(k for k in given if getattr(spec, k) != getattr(saved, k))
        if changed:
            k = changed[0]
            raise SpecError(
                f"--resume continues run {state['run_id']} as it was saved: {k} {getattr(spec, k)!r} differs from "
                f"its {getattr(saved, k)!r} (drop the setting, or start a new run with another --out)"
            )
        return saved.model_copy(update={"runtime": spec.runtime}), state
    state = {
        "run_id": f"hpo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "mlflow_run_id": None,
        "spec": spec.model_dump(mode="json", exclude={"runtime"}),
    }
    return spec, state


def _progress_line(snap: dict, key: str, total: int) -> str:
    best = "-" if snap.get("best") is None else f"{snap['best']:.6f}"
    return (
        f"h={key}: {snap['done'] + snap['failed']}/{total} trials done ({snap['pruned']} pruned, "
        f"{snap['failed']} failed), {snap['running']} running, best val pinball {best}"
    )


def _say(line: str) -> None:
    print(line, flush=True)  # progress must show when stdout is a file or a pipe, too


def run_hpo(spec: HPOSpec, out: str | Path, resume: bool = False, log=_say, given: frozenset = frozenset()) -> dict:
    """Run the whole job; returns the summary written to ``out/summary.json``.

    ``given`` names the settings the user chose explicitly (a resumed run refuses to silently ignore a change).
    """
    import mlflow
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from hpm_ray.hpo.evaluate import refit
    from hpm_ray.hpo.search import Progress, SearchSettings, run_search, share_cpus
    from hpm_ray.runtime import init_ray, mlflow_experiment, tune_storage

    t0 = time.time()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {out} is a file; give a folder for summary.json and report.html")
    spec, state = _start_state(spec, out, resume, given)
    series = load_series(spec)
    horizons = [prepare_horizon(series, h, spec) for h in spec.horizons]  # bad input fails before Ray starts
    out.mkdir(parents=True, exist_ok=True)

    resources = init_ray(spec.runtime.address, spec.runtime.num_cpus, spec.runtime.verbose)
    cpus = max(1, int(resources.get("CPU", 1)))
    concurrent, trial_cpus = share_cpus(cpus, len(horizons), spec.max_concurrent_trials)
    n_nodes = sum(n["Alive"] for n in ray.nodes())
    exp_id = mlflow_experiment(spec.experiment)
    parent = (
        mlflow.start_run(run_id=state["mlflow_run_id"])
        if state["mlflow_run_id"]
        else mlflow.start_run(experiment_id=exp_id, run_name=state["run_id"])
    )
    try:
        if not state["mlflow_run_id"]:
            state["mlflow_run_id"] = parent.info.run_id
            mlflow.log_params({k: str(v)[:500] for k, v in state["spec"].items()})
        _save_state(out, state)

        actor_name = f"{state['run_id']}-progress"
        # Tuners write their state to `storage` on this machine's disk (what --resume reads) and the driver
        # polls the progress actor: both stay on the driver's node; trials and refits go anywhere.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        progress = Progress.options(name=actor_name, get_if_exists=True, scheduling_strategy=here).remote()
        storage = tune_storage()
        tasks, refs = {}, {}
        for hz in horizons:
            refs[hz.h] = ray.put(hz.data)  # once per experiment: every trial and refit reads this object
            settings = SearchSettings.for_horizon(
                spec,
                hz.h,
                hz.data.learner.space,
                name=f"{state['run_id']}-h{hz.h}",
                storage=storage,
                max_concurrent=concurrent,
                trial_cpus=trial_cpus,
                progress_actor=actor_name,
            )
            tasks[run_search.options(scheduling_strategy=here).remote(settings, [refs[hz.h]])] = hz
        verb = "resuming" if resume else "searching"
        log(
            f"{verb} {len(horizons)} horizon(s) x {spec.trials_per_horizon} trials on {cpus} CPU(s) and {n_nodes} "
            f"node(s), {concurrent} concurrent trial(s) per horizon at {trial_cpus:g} CPU each; run {state['run_id']}"
        )

        trials, refits, shown = {}, {}, {}
        pending = list(tasks)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=2.0)
            for key, snap in ray.get(progress.get.remote()).items():
                line = _progress_line(snap, key, spec.trials_per_horizon)
                if shown.get(key) != line:
                    shown[key] = line
                    log(line)
            for ref in ready:  # refit the winner and the default-params baseline while other horizons search
                hz = tasks[ref]
                trials[hz.h] = ray.get(ref)
                best, b = _best(trials[hz.h], hz.h), hz.blocks
                refits[hz.h] = [
                    refit.remote(cfg, rounds, refs[hz.h], b.search, b.calibration, b.test, spec.seed)
                    for cfg, rounds in ((best["config"], best["rounds"]), (hz.data.learner.defaults, spec.max_rounds))
                ]
        summary = {
            "wall_time_s": None,
            "run_id": state["run_id"],
            "mlflow_run_id": state["mlflow_run_id"],
            "horizons": {},
            "details": {},
        }
        figures = {}
        for hz in horizons:
            tuned, default = ray.get(refits[hz.h])
            entry, details, fig = _finish_horizon(hz, spec, trials[hz.h], tuned, default, state, out)
            summary["horizons"][str(hz.h)] = entry
            summary["details"][str(hz.h)] = details
            figures[hz.h] = fig
        summary["wall_time_s"] = round(time.time() - t0, 1)
        _write_outputs(summary, figures, trials, spec, out)
        mlflow.log_metric("wall_time_s", summary["wall_time_s"])
        mlflow.log_artifact(str(out / "summary.json"))
        mlflow.log_artifact(str(out / "report.html"))
        ray.kill(progress)
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run()
    return summary


def _best(records, h: int) -> dict:
    """The best (config, rounds) over every report of every trial: rounds act as validated early stopping."""
    scored = [(r.best, r) for r in records if r.best is not None]
    if not scored:
        errors = [r.error for r in records if r.error]
        raise HPMError(f"horizon {h}: no trial produced a score" + (f"; first error: {errors[0]}" if errors else ""))
    (rounds, score), rec = min(scored, key=lambda t: t[0][1])
    return {"config": rec.config, "rounds": rounds, "score": score, "trial_id": rec.trial_id}


def _finish_horizon(hz: Horizon, spec: HPOSpec, records, tuned, default, state, out: Path) -> tuple[dict, dict, dict]:
    """Scores on the test block, MLflow child runs (trials + model), and the registered model version.

    The version's URI goes into ``state["registered"]``, saved at once: a run resumed after this point reuses it.
    """
    import mlflow

    from hpm_ray.hpo.baselines import (
        NAIVE,
        Baseline,
        Blocks3,
        baselines,
        choose_family,
        pinball_by_quantile,
        score_baseline,
    )
    from hpm_ray.hpo.evaluate import score_forecasts
    from hpm_ray.hpo.pyfunc import NaiveForecaster, QuantileForecaster, ScaledForecaster
    from hpm_ray.metrics import pinball_rows
    from hpm_ray.registry import log_and_register

    b, y = hz.blocks, hz.data.y
    q = list(spec.quantiles)
    untuned = f"default_{hz.data.learner.short}"  # the learner with its library defaults
    best = _best(records, hz.h)
    plan = interval_plan(hz, spec)
    sc = score_forecasts(tuned.q_cal, y[b.calibration], tuned.q_test, y[b.test], q, hz.h, spec.aci_gamma, plan)
    sd = score_forecasts(default.q_cal, y[b.calibration], default.q_test, y[b.test], q, hz.h, spec.aci_gamma, plan)
    m_def = sd.metrics
    # baselines: scored on the search's validation folds, DM-tested against the tuned forecaster's calibrated
    # quantiles on test
    tuned_loss = pinball_rows(y[b.test], sc.q_final, q)
    blocks3 = Blocks3(b.train, b.validation, b.test, hz.data.folds)
    bases = baselines(hz.X, y, blocks3, hz.h, q)
    tuned_family = hz.data.learner.short
    family = choose_family(
        {tuned_family: best["score"], **{base.name: base.val_pinball for base in bases}}, tuned_family
    )
    bases.append(Baseline(untuned, sd.q_final))
    base_entries = {base.name: score_baseline(base, y[b.test], tuned_loss, hz.h, q) for base in bases}
    naive = base_entries[NAIVE]["test_pinball"]
    tuned_ships = family.registered == tuned_family
    if tuned_ships:
        shipped = sc
    else:  # a baseline ships, fitted on train + validation as scored, calibrated like the model
        model = next(base.model for base in bases if base.name == family.registered)  # None: naive
        naive_q = np.quantile(y[b.search], q)

        def forecast(rows: np.ndarray) -> np.ndarray:
            return np.tile(naive_q, (len(rows), 1)) if model is None else model(hz.X.iloc[rows])

        shipped = score_forecasts(
            forecast(b.calibration), y[b.calibration], forecast(b.test), y[b.test], q, hz.h, spec.aci_gamma, plan
        )
    m, cq = shipped.metrics, shipped.conformal
    n_pruned = sum(r.pruned for r in records)
    n_failed = sum(r.error is not None for r in records)
    _log_trials(records, hz.h, state["mlflow_run_id"])
    registered = state.setdefault("registered", {})
    if str(hz.h) not in registered:
        exp_id = mlflow.active_run().info.experiment_id
        with mlflow.start_run(run_name=f"h{hz.h}-model", nested=True, experiment_id=exp_id):
            params = {"rounds": best["rounds"], **best["config"]} if tuned_ships else {}
            mlflow.log_params({"horizon": hz.h, "learner": spec.learner, "family": family.registered, **params})
            reg_metrics = {k: v for k, v in m.items() if np.isfinite(v)}
            reg_metrics.update(
                {
                    "val_pinball": best["score"] if tuned_ships else base_entries[family.registered]["val_pinball"],
                    "naive_pinball": naive,
                    f"{untuned}_pinball": m_def["test_pinball"],
                }
            )
            mlflow.log_metrics(reg_metrics)
            if tuned_ships:
                pyfunc = QuantileForecaster(
                    tuned.model,
                    cq,
                    hz.X,
                    hz.h,
                    spec.scale_by,
                    scale_rows(hz.X, hz.h, spec, b)[1],
                    shipped.online,
                    features=learner_features(hz.X),
                )
            elif model is None:
                pyfunc = NaiveForecaster(naive_q, cq, hz.X, hz.h, shipped.online)
            else:
                pyfunc = ScaledForecaster(model, cq, hz.X, hz.h, shipped.online)
            mv = log_and_register(
                pyfunc,
                f"{spec.model_prefix}-h{hz.h}",
                kind="quantile_forecaster",
                metrics=reg_metrics,
                input_example=hz.X.iloc[b.test[:5]],
                tags={
                    "horizon": str(hz.h),
                    "hpo_run": state["run_id"],
                    "learner": spec.learner,
                    "family": family.registered,
                },
            )
        registered[str(hz.h)] = f"models:/{mv.name}/{mv.version}"
        _save_state(out, state)
    entry = dict(
        family=family.chosen,
        registered_family=family.registered,
        family_reason=family.reason,
        best_params=best["config"],
        val_pinball=best["score"],
        test_pinball=m["test_pinball"],
        tuned_test_pinball=sc.metrics["test_pinball"],
        tuned_test_pinball_by_quantile=pinball_by_quantile(y[b.test], sc.q_final, q),
        baselines=base_entries,
        interval_method=shipped.choice.method,
        interval_step=shipped.choice.step,
        coverage_90=m.get("coverage_90"),
        coverage_50=m.get("coverage_50"),
        mean_width_90=m.get("mean_width_90"),
        coverage_90_by_vol_tercile=shipped.conditional.get("coverage_90_by_vol_tercile"),
        coverage_90_by_vol_tercile_se=shipped.conditional.get("coverage_90_by_vol_tercile_se"),
        longest_miss_run_90=m.get("longest_miss_run_90"),
        coverage_90_cqr=m.get("coverage_90_cqr"),
        coverage_90_aci=m.get("coverage_90_aci"),
        crossing_rate_raw=m["crossing_rate_raw"],
        crossing_rate=m["crossing_rate"],
        n_trials=len(records),
        n_pruned=n_pruned,
        model_uri=registered[str(hz.h)],
    )
    window = rows_per_days(hz.X.index, ROLLING_DAYS)
    worst = {}
    for k, (lo, hi) in shipped.shipped.items() if window else ():
        for suffix, (a_lo, a_hi) in (("", (lo, hi)), ("_cqr", shipped.cqr[k])):
            roll = rolling_coverage(y[b.test], a_lo, a_hi, window)
            worst[f"worst_{ROLLING_DAYS}d_coverage_{k}{suffix}"] = float(roll.min()) if len(roll) else None
    nodes: dict[str, int] = {}
    for r in records:
        if r.node_id:
            nodes[r.node_id] = nodes.get(r.node_id, 0) + 1
    groups_test = plan.groups_test
    details = {
        **m,
        **shipped.conditional,
        **worst,
        "best_rounds": best["rounds"],
        "n_failed": n_failed,
        "blocks": b.sizes(),
        "trials_per_node": nodes,
        "interval_choice": shipped.choice.label,
        "interval_candidates_calibration_score": shipped.choice.candidates,
        "vol_tercile_cuts": [float(c) for c in hz.vol_cuts],
        "test_rows_by_vol_tercile": [int(np.sum(groups_test == g)) for g in range(3)],
        "calibration_rows_by_vol_tercile": [int(np.sum(plan.groups_cal == g)) for g in range(3)],
        untuned: {
            k: m_def[k] for k in ("coverage_90", "coverage_50", "coverage_90_cqr", "crossing_rate_raw") if k in m_def
        }
        | {"interval_choice": sd.choice.label},
    }
    fig = {
        "time": hz.X.index[b.test],
        "q": shipped.q_final,
        "y": y[b.test],
        "shipped": shipped.shipped,
        "cqr": shipped.cqr,
        "window": window,
        "method": shipped.choice.label,
    }
    return entry, details, fig


def _log_trials(records, h: int, parent_id: str) -> None:
    """One child run per trial (params, pinball per report, pruned/failed), skipping trials already logged."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_id)
    seen = {
        r.data.tags.get("trial_id")
        for r in client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.horizon = '{h}'",
            max_results=10_000,
        )
    }
    now = int(time.time() * 1000)
    for rec in records:
        if rec.trial_id in seen:
            continue
        status = "failed" if rec.error else ("pruned" if rec.pruned else "completed")
        run = client.create_run(
            parent.info.experiment_id,
            run_name=f"h{h}-{rec.trial_id}",
            tags={
                "mlflow.parentRunId": parent_id,
                "horizon": str(h),
                "trial_id": rec.trial_id,
                "status": status,
                "pruned": str(rec.pruned).lower(),
                "node_id": rec.node_id or "",
            },
        )
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(METRIC, v, now, rounds) for rounds, v in rec.history],
            params=[Param(k, str(v)) for k, v in rec.config.items()],
            tags=[RunTag("error", rec.error)] if rec.error else [],
        )
        client.set_terminated(run.info.run_id, "FAILED" if rec.error else "FINISHED")


def _write_outputs(summary: dict, figures: dict, trials: dict, spec: HPOSpec, out: Path) -> None:
    from hpm_ray.hpo.report import build_report

    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    build_report(summary, figures, trials, spec, ROLLING_DAYS).save(out / "report.html")
