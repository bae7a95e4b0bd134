"""The HPO on a real local Ray (Tune + OptunaSearch + ASHA) and a real MLflow store, on small data."""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SMALL_SPEC = "max_rounds: 60\nreport_every: 10\ngrace_period: 1\n"
# A complete configuration LightGBM rejects (one leaf): the trial must fail and the search go on.
BAD_POINT = dict(
    learning_rate=0.05,
    num_leaves=1,
    max_depth=4,
    min_child_samples=50,
    feature_fraction=0.8,
    bagging_fraction=0.8,
    lambda_l1=0.01,
    lambda_l2=0.01,
)
SUMMARY_KEYS = {
    "family",
    "registered_family",
    "family_reason",
    "tuned_test_pinball",
    "tuned_test_pinball_by_quantile",
    "best_params",
    "val_pinball",
    "test_pinball",
    "baselines",
    "coverage_90",
    "coverage_50",
    "mean_width_90",
    "coverage_90_aci",
    "crossing_rate_raw",
    "crossing_rate",
    "n_trials",
    "n_pruned",
    "model_uri",
    "interval_method",
    "interval_step",
    "coverage_90_by_vol_tercile",
    "coverage_90_by_vol_tercile_se",
    "longest_miss_run_90",
    "coverage_90_cqr",
}


@pytest.fixture
def small_csv(btc_small, tmp_path):
    p = tmp_path / "btc.csv"
    btc_small.frame.reset_index().to_csv(p, index=False)
    return p


def _spec(tmp_path, extra: str = "") -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(SMALL_SPEC + extra)
    return p


@pytest.mark.slow
def test_data_goes_to_the_object_store_once_and_bad_trials_fail_alone(ray_session, btc_small, tmp_path, monkeypatch):
    import ray

    from hpm_ray.hpo import search
    from hpm_ray.hpo.learners import get_learner
    from hpm_ray.hpo.runner import prepare_horizon
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.hpo.trainable import SearchData

    spec = HPOSpec(horizons=[6], max_rounds=20, report_every=10, grace_period=1)
    data = prepare_horizon(btc_small, 6, spec).data
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda v, *a, **k: puts.append(type(v).__name__) or real_put(v, *a, **k))
    ref = ray.put(data)
    settings = search.SearchSettings(
        name="put-once",
        storage=str(tmp_path),
        num_samples=4,
        max_reports=2,
        grace_period=1,
        reduction_factor=3,
        max_concurrent=2,
        seed=0,
        space=get_learner("lightgbm").space,
        points_to_evaluate=[BAD_POINT],
    )
    recs = search.records(search.make_tuner(settings, ref).fit(), settings.max_reports)
    assert puts.count(SearchData.__name__) == 1  # the explicit put above; trials reuse the ObjectRef
    assert len(recs) == 4
    failed = [r for r in recs if r.error]
    assert len(failed) == 1 and failed[0].config["num_leaves"] == 1 and "num_leaves" in failed[0].error
    assert all(len(r.history) >= 1 for r in recs if not r.error)


@pytest.mark.slow
def test_hpo_end_to_end(ray_session, mlflow_uri, btc_small, small_csv, tmp_path, capsys):
    import mlflow
    from mlflow.tracking import MlflowClient

    from hpm_ray.cli import main
    from hpm_ray.hpo.baselines import UNSERVABLE
    from hpm_ray.registry import version_metrics
    from hpm_ray.runtime import tune_storage

    out = tmp_path / "out"
    spec = _spec(tmp_path, f"points_to_evaluate: [{json.dumps(BAD_POINT)}]\nmodel_prefix: e2e\n")
    args = [
        "hpo",
        "--data",
        str(small_csv),
        "--horizons",
        "6,12",
        "--trials-per-horizon",
        "7",
        "--spec",
        str(spec),
        "--out",
        str(out),
    ]
    code = main(args)
    printed = capsys.readouterr().out
    assert code == 0
    assert "h=6:" in printed and "pruned" in printed and "best val pinball" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wall_time_s"] > 0 and set(summary["horizons"]) == {"6", "12"}
    for h, e in summary["horizons"].items():
        assert set(e) == SUMMARY_KEYS
        assert e["n_trials"] == 7 and summary["details"][h]["n_failed"] == 1
        assert e["crossing_rate"] == 0.0
        assert 0.8 <= e["coverage_90"] <= 0.98 and 0.35 <= e["coverage_50"] <= 0.7  # ~560 test rows
        assert e["mean_width_90"] > 0
        assert set(e["baselines"]) == {"naive", "rolling", "ewma", "har", "garch", "default_lgbm"}
        for name, be in e["baselines"].items():
            assert be["test_pinball"] > 0 and set(be["test_pinball_by_quantile"]) == {
                "0.05",
                "0.25",
                "0.5",
                "0.75",
                "0.95",
            }
            assert 0 <= be["dm_pvalue"] <= 1 and name in be["verdict"] and f"at h={h} (DM" in be["verdict"]
            assert (be["val_pinball"] is None) == (name == "default_lgbm")
        # the family is chosen on validation: the lowest validation pinball, the tuned model's included
        val = {"lgbm": e["val_pinball"], **{k: v["val_pinball"] for k, v in e["baselines"].items() if v["val_pinball"]}}
        assert e["family"] == min(val, key=val.get)
        # what validation chose is registered, unless it needs a state no feature row carries (rolling, GARCH)
        assert e["registered_family"] == e["family"] or (
            e["family"] in UNSERVABLE and e["registered_family"] not in UNSERVABLE
        )
        assert e["family"] in e["family_reason"]
        shipped_test = e["tuned_test_pinball"] if e["registered_family"] == "lgbm" else None
        assert shipped_test is None or e["test_pinball"] == shipped_test
        assert e["tuned_test_pinball"] == pytest.approx(np.mean(list(e["tuned_test_pinball_by_quantile"].values())))
        # the shipped interval: conformal PID (the default), its step chosen on calibration among the spec's steps
        d = summary["details"][h]
        assert e["interval_method"] == "pid" and e["interval_step"] in (0.002, 0.005, 0.01, 0.02, 0.05)
        assert (
            min(d["interval_candidates_calibration_score"], key=d["interval_candidates_calibration_score"].get)
            == d["interval_choice"]
            == f"pid(step={e['interval_step']:g})"
        )
        assert len(e["coverage_90_by_vol_tercile"]) == 3 and sum(d["test_rows_by_vol_tercile"]) == d["blocks"]["test"]
        assert sum(d["calibration_rows_by_vol_tercile"]) == d["blocks"]["calibration"]
        for cov, se in zip(e["coverage_90_by_vol_tercile"], e["coverage_90_by_vol_tercile_se"]):
            assert (cov is None) == (se is None) and (se is None or 0 <= se < 0.5)
        assert 1 <= e["longest_miss_run_90"] < d["blocks"]["test"]
        assert set(e["best_params"]) >= {"learning_rate", "num_leaves", "lambda_l2"}
    # each horizon's trials trained on that horizon's data (concurrent Tuners must not share bound data):
    # replaying the winning config on the horizon's own data reproduces the reported score exactly
    from hpm_ray.config import load_spec
    from hpm_ray.hpo.online import METADATA_KEY as ONLINE_KEY
    from hpm_ray.hpo.online import OnlineCalibration, pid_intervals
    from hpm_ray.hpo.runner import prepare_horizon
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.hpo.trainable import fit_steps
    from hpm_ray.metrics import coverage, mean_pinball

    sp = load_spec(HPOSpec, spec)
    for h in (6, 12):
        e = summary["horizons"][str(h)]
        replay = min(v for _, v in fit_steps(e["best_params"], prepare_horizon(btc_small, h, sp).data))
        assert replay == pytest.approx(e["val_pinball"], rel=1e-9)
    html = (out / "report.html").read_text()
    assert "<svg" in html and "<script" not in html and "Horizon 12 bars" in html
    assert "Coverage by volatility tercile" in html and "shorter than 30 days; no rolling coverage" in html
    for h in ("6", "12"):
        assert f"h={h}: ships {summary['horizons'][h]['registered_family']}; " in html
        assert re.search(rf"h={h}: (no evidence of skill over|skill over|the tuned forecaster loses to) ", html)

    # pruned trials informed the searcher: every trial of the Optuna study was told a value or a failure
    run_id = summary["run_id"]
    state = glob.glob(f"{tune_storage()}/{run_id}-h6/searcher-state-*.pkl")
    with open(state[0], "rb") as f:
        study = pickle.load(f)["_ot_study"]
    states = [t.state.name for t in study.trials]
    assert len(states) == 7 and states.count("FAIL") == 1 and states.count("COMPLETE") == 6
    assert summary["horizons"]["6"]["n_pruned"] >= 1

    # MLflow: one parent, a child per trial (history per report, pruned flag) and one model run per horizon
    client = MlflowClient()
    parent = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    trial_runs = [r for r in children if "trial_id" in r.data.tags]
    assert len(trial_runs) == 14 and len(children) == 16
    assert {r.data.tags["status"] for r in trial_runs} >= {"pruned", "failed", "completed"}
    full = next(r for r in trial_runs if r.data.tags["status"] == "completed")
    assert len(client.get_metric_history(full.info.run_id, "val_pinball")) == 6  # 60 rounds / 10
    assert {"summary.json", "report.html"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    name, version = summary["horizons"]["6"]["model_uri"].split("/")[1:]
    mv = client.get_model_version(name, version)
    assert mv.tags["hpm_ray.kind"] == "quantile_forecaster"
    assert mv.tags["family"] == summary["horizons"]["6"]["registered_family"]
    assert version_metrics(mv)["coverage_90"] == pytest.approx(summary["horizons"]["6"]["coverage_90"])
    info = mlflow.models.get_model_info(summary["horizons"]["6"]["model_uri"])  # as the runner registers it
    assert info.saved_input_example_info is not None and "rv_168" in info.signature.inputs.input_names()

    # the registered model predicts quantiles and intervals in a fresh process; on the run's test rows its
    # calibrated quantiles reproduce the reported test pinball and split-CQR coverage (same scale, fill value, CQR)
    hz = prepare_horizon(btc_small, 6, sp)
    rows_path = tmp_path / "test_rows.pkl"
    hz.X.iloc[hz.blocks.test].to_pickle(rows_path)
    code = (
        "import mlflow, sys, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model({summary['horizons']['6']['model_uri']!r})\n"
        f"m.predict(pd.read_pickle({str(rows_path)!r})).to_json(sys.stdout, orient='split', double_precision=15)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = pd.read_json(io.StringIO(proc.stdout), orient="split")
    assert list(pred.columns) == ["q_0.05", "q_0.25", "q_0.5", "q_0.75", "q_0.95", "lo_90", "hi_90", "lo_50", "hi_50"]
    assert len(pred) == len(hz.blocks.test)
    assert np.all(np.diff(pred.iloc[:, :5].to_numpy(), axis=1) >= 0)  # no crossing
    assert np.all((pred.lo_90 <= pred.lo_50) & (pred.lo_50 < pred.hi_50) & (pred.hi_50 <= pred.hi_90))
    y_test = hz.y.iloc[hz.blocks.test].to_numpy()
    calibrated = pred[["lo_90", "lo_50", "q_0.5", "hi_50", "hi_90"]].to_numpy()
    h6 = summary["horizons"]["6"]
    assert mean_pinball(y_test, calibrated, [0.05, 0.25, 0.5, 0.75, 0.95]) == pytest.approx(
        h6["test_pinball"], rel=1e-6
    )
    assert coverage(y_test, pred.lo_90, pred.hi_90) == pytest.approx(h6["coverage_90_cqr"])
    # its MLmodel metadata carries PID's start after calibration (what the A/B app continues from): replaying the
    # test block from it, labels h bars late, gives the shipped interval's reported coverage
    online = OnlineCalibration.from_dict(info.metadata[ONLINE_KEY])
    assert info.metadata["hpm_ray_forecast"] == {"horizon": 6, "bar_seconds": 3600.0}  # hourly bars: 425 before 6 h
    assert (online.method, online.step, [lv.key for lv in online.levels]) == ("pid", h6["interval_step"], ["90", "50"])
    lv, raw = online.levels[0], pred.iloc[:, :5].to_numpy()
    vol = hz.X.iloc[hz.blocks.test][online.vol_feature].to_numpy()
    r = pid_intervals(
        raw[:, lv.lo_col],
        raw[:, lv.hi_col],
        y_test,
        lv.alpha,
        6,
        lv.eta,
        np.array(lv.q0),
        None,
        None,
        online.groups(vol),
    )
    assert coverage(y_test, r.lo, r.hi) == pytest.approx(h6["coverage_90"])

    # --resume of a run that already registered its models reuses them: no second version, no second model run
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {h: e["model_uri"] for h, e in again["horizons"].items()} == {
        h: e["model_uri"] for h, e in summary["horizons"].items()
    }
    for h in ("6", "12"):
        versions = client.search_model_versions(f"name = 'e2e-h{h}'")
        assert sum(v.tags.get("hpo_run") == run_id for v in versions) == 1
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 16


def _finished_trials(exp_dir: Path) -> dict[str, float]:
    """Trial id -> timestamp of its last result, for TERMINATED trials in the newest saved experiment state."""
    states = sorted(exp_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        entries = json.loads(states[-1].read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError):  # being rewritten
        return {}
    out = {}
    for trial_json, run_json in entries:
        trial = json.loads(trial_json)
        if trial.get("status") == "TERMINATED":
            out[trial["trial_id"]] = json.loads(run_json)["last_result"].get("timestamp")
    return out


@pytest.mark.slow
def test_resume_after_sigkill(sub_env, small_csv, tmp_path, lines_until):
    """kill -9 of the driver, then --resume: every trial the driver had counted as done before the kill is kept
    as it was (not lost, not re-run), and the run ends with exactly the requested trials."""
    from hpm_ray.runtime import tune_storage

    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "hpm_ray",
        "hpo",
        "--data",
        str(small_csv),
        "--horizons",
        "6",
        "--trials-per-horizon",
        "8",
        "--spec",
        str(_spec(tmp_path)),
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=sub_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done_lines = lines_until(proc, lambda line: bool(re.match(r"h=6: [3-7]/8 trials done", line)), timeout=150)
    assert proc.poll() is None and done_lines, (
        f"run ended or stalled before it could be killed: {''.join(done_lines)[-2000:]}"
    )
    counted = int(re.match(r"h=6: (\d)/8", done_lines[-1]).group(1))
    time.sleep(0.5)  # the progress line lags the controller; any trial it counted is long finished
    proc.send_signal(signal.SIGKILL)
    killed_at = time.time()
    proc.wait()
    assert not (out / "summary.json").exists()
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    before = _finished_trials(Path(tune_storage()) / f"{run_id}-h6")
    time.sleep(2)  # let Ray reap the dead driver's Tuner task

    done = subprocess.run(cmd + ["--resume"], env=sub_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "resuming" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == run_id and summary["horizons"]["6"]["n_trials"] == 8
    after = _finished_trials(Path(tune_storage()) / f"{run_id}-h6")
    assert len(after) + summary["details"]["6"]["n_failed"] == 8
    # Tune's result timestamps are whole seconds: a re-run trial reports after the 2 s pause above
    kept = [t for t, ts in after.items() if ts <= killed_at]
    assert len(kept) >= counted, f"{counted} trials were done before the kill, {len(kept)} survived the resume"
    assert all(after.get(t) == ts for t, ts in before.items())


@pytest.fixture
def regime_csv(tmp_path):
    """3,000 hourly closes whose volatility switches between calm (0.2 %) and wild (2 %) every 100-300 bars: the
    realised-volatility features predict the spread of forward returns, constant quantiles cannot."""
    rng = np.random.default_rng(7)
    sigma = np.concatenate([np.full(rng.integers(100, 300), s) for s in [0.002, 0.02] * 10])[:3000]
    close = 100 * np.exp(np.cumsum(sigma * rng.standard_normal(len(sigma))))
    times = pd.date_range("2024-01-01", periods=len(close), freq="h")
    p = tmp_path / "regimes.csv"
    pd.DataFrame({"timestamp": times, "close": close}).to_csv(p, index=False)
    return p


@pytest.mark.slow
def test_hpo_tunes_the_xgboost_learner(ray_session, mlflow_uri, regime_csv, tmp_path):
    """The second learner, chosen by the spec alone, runs through the same runner: Tune searches XGBoost's own
    space; with raw returns as target (no scale_by) the learner itself must find the volatility regime, so its
    calibrated test quantiles beat constant ones; they do not cross, and the registered model predicts them again."""
    import mlflow

    from hpm_ray.config import load_spec
    from hpm_ray.hpo.learners import get_learner
    from hpm_ray.hpo.runner import load_series, prepare_horizon, run_hpo
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.metrics import mean_pinball

    spec_path = tmp_path / "xgb.yaml"
    spec_path.write_text(
        f"learner: xgboost\ndata: {regime_csv}\nhorizons: [6]\ntrials_per_horizon: 4\nmax_rounds: 40\n"
        "report_every: 10\ngrace_period: 1\nn_folds: 1\nscale_by: null\nmodel_prefix: xgb\n"
    )
    spec = load_spec(HPOSpec, spec_path)
    summary = run_hpo(spec, tmp_path / "out", log=lambda line: None)
    e, d = summary["horizons"]["6"], summary["details"]["6"]
    assert set(e["best_params"]) == {p.name for p in get_learner("xgboost").space} and e["n_trials"] == 4
    assert d["n_failed"] == 0 and set(e["baselines"]) == {"naive", "rolling", "ewma", "har", "garch", "default_xgb"}
    # constant training quantiles lose, and significantly: the runner's own DM test (HAC, two-sided) at 5 %
    naive = e["baselines"]["naive"]
    assert e["test_pinball"] < naive["test_pinball"] and naive["dm_stat"] < 0 and naive["dm_pvalue"] < 0.05
    assert e["crossing_rate"] == 0.0
    mv = mlflow.tracking.MlflowClient().get_model_version(*e["model_uri"].split("/")[1:])
    assert mv.tags["learner"] == "xgboost"
    hz = prepare_horizon(load_series(spec), 6, spec)
    pred = mlflow.pyfunc.load_model(e["model_uri"]).predict(hz.X.iloc[hz.blocks.test])
    calibrated = pred[["lo_90", "lo_50", "q_0.5", "hi_50", "hi_90"]].to_numpy()
    assert np.all(np.diff(calibrated, axis=1) >= 0)
    y_test = hz.y.iloc[hz.blocks.test].to_numpy()
    assert mean_pinball(y_test, calibrated, spec.quantiles) == pytest.approx(e["test_pinball"], rel=1e-6)
