"""Hysteresis of ``drift watch``: a cooldown after an action and the alarm on k of the last n checks, with
every decision (also "no action, and why") in the watch's JSON log and on its MLflow run."""

import json
import time

import pytest

from hpm_ray.config import load_spec
from hpm_ray.drift.hysteresis import Hysteresis, WatchLog, last_ab_event, parse_alarms, permit
from hpm_ray.drift.monitor import WatchSpec
from hpm_ray.errors import SpecError

HOUR = 3600.0


@pytest.mark.parametrize(
    "alarms, k, n, act",
    [
        ([True], 1, 1, True),
        ([True], 2, 3, False),  # one alarm so far: 1 of 1 < 2
        ([False, True], 2, 3, False),
        ([True, False, True], 2, 3, True),
        ([True, False, False, True], 2, 3, False),  # the first alarm fell out of the last 3
        ([True, True, False, False, True], 2, 2, False),
    ],
)
def test_k_of_n(alarms, k, n, act):
    p = permit(alarms, None, 0.0, Hysteresis(0.0, k, n))
    assert p.act is act
    hits = sum(alarms[-n:])
    assert f"alarm on {hits} of the last {min(n, len(alarms))}" in p.reason


def test_cooldown_counts_from_the_last_action():
    rule = Hysteresis(6 * HOUR, 1, 1)
    waiting = permit([True], 100.0, 100.0 + 2 * HOUR, rule)
    assert not waiting.act and "cooldown: 4.00 h left of 6 h" in waiting.reason
    assert permit([True], 100.0, 100.0 + 6 * HOUR, rule).act  # exactly at the end of the cooldown


@pytest.mark.parametrize("k, n", [(0, 3), (4, 3)])
def test_k_of_n_must_make_sense(k, n):
    with pytest.raises(SpecError, match="k of n"):
        Hysteresis(0.0, k, n)
    with pytest.raises(SpecError, match="alarm") as exc:  # a spec file or flags: one line naming the setting
        load_spec(WatchSpec, None, {"alarm_k": k, "alarm_n": n})
    assert not str(exc.value).startswith("spec: spec:") and "Value error" not in str(exc.value)


@pytest.mark.parametrize("text", ["2", "2/", "a/3", "2-3"])
def test_parse_alarms_refuses(text):
    with pytest.raises(SpecError, match="K/N"):
        parse_alarms(text)


def test_parse_alarms_and_cooldown_zero():
    assert parse_alarms(" 2 / 3 ") == (2, 3)
    assert WatchSpec(cooldown="0").hysteresis().cooldown_s == 0.0
    assert WatchSpec(cooldown="90m").hysteresis().cooldown_s == 5400.0
    with pytest.raises(SpecError, match="interval"):
        load_spec(WatchSpec, None, {"cooldown": "soon"})


def test_watch_log_is_the_memory_and_survives_a_torn_line(tmp_path):
    log = WatchLog(tmp_path / "w" / "watch.jsonl")
    assert log.verdicts() == [] and log.last_action() is None
    log.append({"drifted": False, "action": "none"})
    log.append({"action": "error", "reason": "only 3 rows"})  # an error is not a check
    log.append({"drifted": True, "action": "ab_started"})
    with log.path.open("a") as f:
        f.write('{"drifted": tru')  # a crash mid-write
    log.append({"drifted": True, "action": "waiting"})
    assert log.verdicts() == [False, True, True]
    started = [e["time"] for e in log.entries() if e["action"] == "ab_started"]
    assert log.last_action() == started[0]


def test_last_ab_event_reads_changes_of_champion_only():
    status = {
        "history": [
            {"time": 10.0, "event": "start"},
            {"time": 20.0, "event": "rollback"},
            {"time": 30.0, "event": "expand"},
            {"time": 25.0, "event": "promote"},
        ]
    }
    assert last_ab_event(status) == 25.0
    status["history"].append({"time": 27.0, "event": "revert"})  # ab revert, or the registry alias moving
    status["history"].append({"time": 26.0, "event": "champion"})
    assert last_ab_event(status) == 27.0
    status["history"].append({"time": 28.0, "event": "inconclusive"})  # the sequential test ran out of samples
    assert last_ab_event(status) == 28.0
    assert last_ab_event({"history": [{"time": 5.0, "event": "start"}]}) is None
    assert last_ab_event({}) is None  # /ab/status without the admin token shows no history


def test_the_demo_reports_an_inconclusive_end_as_such():
    from hpm_ray.drift.demo import ENDS, ab_end

    history = [{"time": 5.0, "event": "promote"}, {"time": 10.0, "event": "start"}, {"time": 20.0, "event": "expand"}]
    assert ab_end({"history": history}, since=10.0) is None  # an earlier A/B's promotion is not this one's end
    history.append({"time": 30.0, "event": "inconclusive"})
    assert ENDS[ab_end({"history": history}, since=10.0)["event"]] == "inconclusive"


def _fake_loop(tmp_path, monkeypatch, history=()):
    """The watcher against a drifted check, a retrain that registers v7, gates that pass and a fake app."""
    from hpm_ray.drift import monitor
    from hpm_ray.registry import aliases
    from hpm_ray.registry.gates import GateResult
    from hpm_ray.serving import client as serving_client
    from tests.test_drift_units import _App, _drifted_outcome, fake_served_data

    app, retrained = _App(), []
    app.status["history"] = list(history)
    monkeypatch.setattr(monitor, "run_check", lambda spec, log: _drifted_outcome(tmp_path))
    monkeypatch.setattr(monitor, "_retrain", lambda spec, model, out, data: retrained.append(1) or "7")
    fake_served_data(monkeypatch, monitor)
    monkeypatch.setattr(serving_client, "call", app)
    monkeypatch.setattr(aliases, "set_alias", lambda *a, **k: None)
    monkeypatch.setattr(aliases, "check_gates", lambda name, v, g: GateResult(True, ()))
    return monitor, app, retrained


def test_a_second_alarm_inside_the_cooldown_takes_no_action(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monitor, app, retrained = _fake_loop(tmp_path, monkeypatch)
    spec = WatchSpec(out=str(tmp_path / "watch"), cooldown="6h", alarm_k=1, alarm_n=1)
    first = monitor.watch_once(spec, lambda msg: None)
    assert first["action"] == "ab_started" and len(retrained) == 1
    app.status["variants"]["challenger"] = None  # the A/B ended (say, rolled back) before the next check
    second = monitor.watch_once(spec, lambda msg: None)
    assert second["action"] == "waiting" and len(retrained) == 1 and len(app.posts) == 1
    tags = MlflowClient().get_run(second["run_id"]).data.tags
    assert tags["decision.retrain"].startswith("not started: cooldown")
    lines = [json.loads(x) for x in (tmp_path / "watch" / "watch.jsonl").read_text().splitlines()]
    assert [(x["drifted"], x["action"]) for x in lines] == [(True, "ab_started"), (True, "waiting")]
    assert lines[1]["reason"].startswith("not started: cooldown") and lines[1]["run_id"] == second["run_id"]


def test_a_retrain_that_fails_after_it_ran_starts_a_cooldown(mlflow_uri, tmp_path, monkeypatch):
    """The gates call failing after a retrain (or registering, or /ab/start) is an error, but the retrain cost
    minutes: the next alarm waits instead of retraining at once."""
    from hpm_ray.registry import aliases

    def registry_down(*args):
        raise ConnectionError("registry down")

    monitor, _app, retrained = _fake_loop(tmp_path, monkeypatch)
    monkeypatch.setattr(aliases, "check_gates", registry_down)
    spec = WatchSpec(out=str(tmp_path / "watch"), cooldown="6h", alarm_k=1, alarm_n=1)
    with pytest.raises(ConnectionError):
        monitor.watch_once(spec, lambda msg: None)
    assert monitor.watch_once(spec, lambda msg: None)["action"] == "waiting" and retrained == [1]
    error = json.loads((tmp_path / "watch" / "watch.jsonl").read_text().splitlines()[0])
    assert error["action"] == "error" and error["retrained"] <= error["time"]


def test_a_promotion_in_the_app_starts_a_cooldown(mlflow_uri, tmp_path, monkeypatch):
    monitor, app, retrained = _fake_loop(tmp_path, monkeypatch, [{"time": time.time() - HOUR, "event": "promote"}])
    spec = WatchSpec(out=str(tmp_path / "watch"), cooldown="2h", alarm_k=1, alarm_n=1)
    assert monitor.watch_once(spec, lambda msg: None)["action"] == "waiting" and retrained == []
    app.status["history"][0]["time"] -= 2 * HOUR  # the promotion is now 3 h old
    assert monitor.watch_once(spec, lambda msg: None)["action"] == "ab_started" and retrained == [1]


def test_two_of_three_waits_for_a_second_alarm(mlflow_uri, tmp_path, monkeypatch):
    monitor, _, retrained = _fake_loop(tmp_path, monkeypatch)
    spec = WatchSpec(out=str(tmp_path / "watch"))  # defaults: 2 of 3, 6 h cooldown
    first = monitor.watch_once(spec, lambda msg: None)
    assert first["action"] == "waiting" and retrained == []
    assert monitor.watch_once(spec, lambda msg: None)["action"] == "ab_started" and retrained == [1]


@pytest.mark.parametrize(
    "earlier",
    [
        [{"drifted": True, "action": "waiting", "version": "0"}] * 2,  # alarms on the previous champion
        [{"drifted": True, "action": "ab_started", "version": "1"}],  # the alarm an action already answered
    ],
)
def test_k_of_n_counts_only_alarms_on_this_champion_since_the_last_action(mlflow_uri, tmp_path, monkeypatch, earlier):
    monitor, _app, retrained = _fake_loop(tmp_path, monkeypatch)
    journal = WatchLog(tmp_path / "watch" / "watch.jsonl")
    for entry in earlier:
        journal.append({**entry, "model": "m", "time": time.time() - HOUR})
    spec = WatchSpec(out=str(tmp_path / "watch"), cooldown="0", alarm_k=2, alarm_n=3)
    first = monitor.watch_once(spec, lambda msg: None)
    assert first["action"] == "waiting" and "alarm on 1 of the last 1" in journal.entries()[-1]["reason"]
    assert monitor.watch_once(spec, lambda msg: None)["action"] == "ab_started" and retrained == [1]


def test_an_alarm_whose_retrain_was_refused_still_counts_toward_k_of_n(mlflow_uri, tmp_path, monkeypatch):
    """Too few labels refuses the retrain (DataError), but the check ran: with 2-of-3 the next alarm acts."""
    from hpm_ray.errors import DataError

    monitor, _app, retrained = _fake_loop(tmp_path, monkeypatch)
    fake = monitor.served_training_data

    def no_labels(spec, c):
        raise DataError("only 0 served row(s) have labels; retraining needs 200")

    monkeypatch.setattr(monitor, "served_training_data", no_labels)
    spec = WatchSpec(out=str(tmp_path / "watch"), alarm_k=2, alarm_n=3)
    first = monitor.watch_once(spec, lambda msg: None)  # 1 alarm of 2 needed: waits, no retrain attempted
    assert first["action"] == "waiting"
    with pytest.raises(DataError, match="only 0 served row"):
        monitor.watch_once(spec, lambda msg: None)
    monkeypatch.setattr(monitor, "served_training_data", fake)
    assert monitor.watch_once(spec, lambda msg: None)["action"] == "ab_started" and retrained == [1]
    lines = [json.loads(x) for x in (tmp_path / "watch" / "watch.jsonl").read_text().splitlines()]
    assert [(x.get("drifted"), x["action"]) for x in lines] == [
        (True, "waiting"),
        (True, "error"),
        (True, "ab_started"),
    ]


def fit_logistic(X, y):
    """A user retraining pipeline (``--pipeline tests.test_drift_hysteresis:fit_logistic``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


def test_a_user_pipeline_retrains_without_the_held_out_block_the_gates_read(mlflow_uri, tmp_path):
    """``pipeline: module:function`` fits the user's callable on the fit rows only; the registered version carries
    gate metrics measured on the held-out block of served rows, uses exactly that block as its drift reference,
    and records the ids of the served rows it fitted on (and, apart, of those held out)."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from hpm_ray.drift import monitor
    from hpm_ray.drift.retrain_data import retrain_data
    from hpm_ray.registry.models import version_metrics
    from hpm_ray.registry.reference import load_reference
    from hpm_ray.serving.served import LabelledRows

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=600), "b": rng.normal(size=600)})
    y = (X["a"] + 0.5 * rng.normal(size=600) > 0).astype(int).to_numpy()
    rows = LabelledRows(X.iloc[:500], list(y[:500]), tuple(f"r{i // 10}:{i % 10}" for i in range(500)))
    data = retrain_data(rows, ["a", "b"], (X.iloc[500:], y[500:]), min_labels=200, reference_rows=100)
    spec = WatchSpec(pipeline="tests.test_drift_hysteresis:fit_logistic")
    version = monitor._retrain(spec, "drift-pipeline", tmp_path, data)
    client = MlflowClient()
    mv = client.get_model_version("drift-pipeline", version)
    run = client.get_run(mv.run_id)
    est = mlflow.pyfunc.load_model(f"models:/drift-pipeline/{version}").unwrap_python_model().estimator
    assert est[0].n_samples_seen_ == data.n_fit == 400 + 100 == int(run.data.params["rows_fit"])
    pd.testing.assert_frame_equal(load_reference("drift-pipeline", version).features, data.held_out()[0])
    gate_metrics = version_metrics(mv)  # what check_gates reads: measured on the held-out block
    assert gate_metrics["auc"] > 0.8 and 0 < gate_metrics["f1"] <= 1 and "recall_1" in gate_metrics
    assert mv.tags["hpm_ray.pipeline"] == spec.pipeline
    fit_ids = mlflow.artifacts.load_text(f"runs:/{mv.run_id}/served_ids.txt").split()
    held_ids = mlflow.artifacts.load_text(f"runs:/{mv.run_id}/held_out_ids.txt").split()
    assert fit_ids == list(data.fit_ids) and held_ids == list(data.held_out_ids) and len(held_ids) == 100
    assert sorted(fit_ids + held_ids) == sorted(rows.ids)


@pytest.mark.parametrize("ref, message", [("nope", "module:function"), ("no_such_module_x:f", "cannot import")])
def test_a_bad_pipeline_is_refused_when_the_spec_is_read(ref, message):
    with pytest.raises(SpecError, match=message):
        load_spec(WatchSpec, None, {"pipeline": ref})


def test_the_watch_refuses_the_public_status_before_retraining(mlflow_uri, tmp_path, monkeypatch):
    """Without the admin token the app shows no history (no cooldown to read) and would refuse /ab/start after
    minutes of retraining: the watch stops first and says why."""
    from hpm_ray.errors import HPMError

    monitor, app, retrained = _fake_loop(tmp_path, monkeypatch)
    del app.status["history"]
    with pytest.raises(HPMError, match="needs the admin token"):
        monitor.watch_once(WatchSpec(out=str(tmp_path / "watch"), alarm_k=1, alarm_n=1), lambda msg: None)
    assert retrained == [] and app.posts == []


def test_reference_rows_and_min_labels_must_fit_in_max_rows():
    """A retrain keeps ``reference_rows`` table rows and needs ``min_labels`` served rows within ``max_rows``: a
    spec where they cannot fit is refused when read, not after a drift."""
    with pytest.raises(
        SpecError, match=r"reference_rows \(2000\) \+ min_labels \(1000\) exceed the retrain's max_rows"
    ):
        load_spec(WatchSpec, None, {"distill": {"max_rows": 2000}})
    # the held-out share of min_labels is the retrained version's drift reference: it must reach min_rows
    with pytest.raises(SpecError, match=r"holds out 40 served rows.*min_rows \(200\): raise min_labels to 1000"):
        load_spec(WatchSpec, None, {"min_labels": 200})
    assert load_spec(WatchSpec, None, {"min_labels": 200, "min_rows": 40}).min_labels == 200
    assert load_spec(WatchSpec, None, {"distill": {"max_rows": 2000}, "source": "table"}).source == "table"
