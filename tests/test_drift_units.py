"""Pure parts of the drift loop: interval parsing, the served-rows log (sampling, rotation, bound, window),
prediction scores, the verdict/report, and the watch loop's handling of refused checks."""

import json
import time

import numpy as np
import pandas as pd
import pytest

from hpm_ray.drift.checks import check_drift
from hpm_ray.drift.monitor import WatchSpec, parse_interval, watch
from hpm_ray.drift.report import verdict, write_report
from hpm_ray.errors import DataError, SpecError
from hpm_ray.registry.reference import prediction_score
from hpm_ray.serving.served import ServedLog, read_window


@pytest.mark.parametrize(
    "text, seconds", [("30s", 30), ("60m", 3600), ("2h", 7200), ("1d", 86400), ("45", 45), ("1.5m", 90)]
)
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "5x", "m", "-3m", "1 hour"])
def test_parse_interval_refuses(text):
    with pytest.raises(SpecError, match="interval"):
        parse_interval(text)


def _frames(n, start=0):
    frame = pd.DataFrame({"a": np.arange(start, start + n), "b": np.linspace(0, 1, n)})
    out = pd.DataFrame({"prediction": [1] * n, "proba_0": [0.25] * n, "proba_1": [0.75] * n})
    return frame, out


def test_served_log_rotates_and_stays_bounded(tmp_path):
    log = ServedLog(tmp_path, file_rows=10, max_files=3)
    for i in range(10):  # 10 requests x 7 rows = 70 rows -> 7 files written, the oldest 4 pruned
        log.add("m", "champion", "1", *_frames(7, start=7 * i))
        log.flush()
        time.sleep(0.01)  # distinct mtimes
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) == 3
    assert all(len(f.read_text().splitlines()) <= 10 for f in files)
    w = read_window(tmp_path, 1000)
    assert list(w.features["a"]) == list(range(70 - len(w.features), 70))  # the newest rows, in order
    assert 20 <= len(w.features) <= 30
    assert list(w.outputs.columns) == ["prediction", "proba_0", "proba_1"]
    assert set(w.meta["_version"]) == {"1"} and set(w.meta["_variant"]) == {"champion"}


def test_served_window_takes_the_newest_rows_across_writers(tmp_path):
    one, two = ServedLog(tmp_path), ServedLog(tmp_path)
    one.add("m", "champion", "1", *_frames(5, 0))
    one.flush()
    two.add("m", "challenger", "2", *_frames(5, 100))
    two.flush()
    w = read_window(tmp_path, 7)
    assert list(w.features["a"]) == [3, 4, 100, 101, 102, 103, 104]
    assert list(w.meta["_version"]) == ["1"] * 2 + ["2"] * 5


def test_served_log_sampling_fraction(tmp_path):
    log = ServedLog(tmp_path, fraction=0.25, seed=1)
    for _ in range(400):
        log.add("m", "champion", "1", *_frames(1))
    log.flush()
    n = len(read_window(tmp_path, 10_000).features)
    assert 60 <= n <= 140  # binomial(400, 0.25): mean 100, sd 8.7
    with pytest.raises(ValueError):
        ServedLog(tmp_path, fraction=1.5)


def test_no_served_rows_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no served rows"):
        read_window(tmp_path / "missing", 10)


def test_prediction_score():
    binary = pd.DataFrame({"prediction": [1, 0], "proba_0": [0.2, 0.9], "proba_1": [0.8, 0.1]})
    np.testing.assert_allclose(prediction_score(binary), [0.8, 0.1])
    multi = pd.DataFrame(
        {"prediction": ["a", "c"], "proba_a": [0.5, 0.1], "proba_b": [0.3, 0.2], "proba_c": [0.2, 0.7]}
    )
    np.testing.assert_allclose(prediction_score(multi), [0.5, 0.7])
    np.testing.assert_allclose(prediction_score(pd.DataFrame({"prediction": [1.5, 2.0]})), [1.5, 2.0])
    assert prediction_score(pd.DataFrame({"prediction": ["x", "y"]})) is None


def test_verdict_and_report(tmp_path):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(size=1000), "y": rng.normal(size=1000)})
    cur = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(loc=1.5, size=500)})
    calm = check_drift(
        ref, ref.sample(500, random_state=1), reference_pred=ref.x.to_numpy(), current_pred=ref.x.to_numpy()[:500]
    )
    assert verdict(calm).startswith("no drift")
    result = check_drift(ref, cur, reference_pred=ref.x.to_numpy(), current_pred=cur.y.to_numpy())
    assert verdict(result).startswith("DRIFT") and "y" in verdict(result) and "prediction" in verdict(result)
    json_path, html_path = write_report(result, {"model": "m", "version": "3"}, tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["drifted"] is True and payload["version"] == "3"
    assert [f["feature"] for f in payload["features"] if f["drifted"]] == ["y"]
    html = html_path.read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org", "")


def test_watch_reports_refused_checks_and_keeps_going(tmp_path, monkeypatch):
    """A check refused for bad input never retrains; a long-running watcher says so and tries again."""
    from hpm_ray.drift import monitor

    calls, sleeps = [], []

    def refused(spec, say):
        calls.append(spec)
        raise DataError("only 3 served row(s) in the window; a drift check needs at least 200")

    monkeypatch.setattr(monitor, "watch_once", refused)
    said = []
    out = watch(WatchSpec(interval="2s", iterations=3), said.append, sleeps.append)
    assert len(calls) == 3 and sleeps == [2.0, 2.0]
    assert [r["action"] for r in out] == ["error"] * 3 and all("only 3 served" in s for s in said)
    with pytest.raises(DataError):  # --once: the refusal is the command's answer (exit 2)
        watch(WatchSpec(interval="2s", iterations=1), said.append, sleeps.append)
    # a missing gates file is refused before the first check (a watcher would otherwise skip it forever)
    with pytest.raises(SpecError, match="gates file not found"):
        watch(WatchSpec(interval="2s", iterations=3, gates=str(tmp_path / "nope.yaml")), said.append, sleeps.append)
    assert len(calls) == 4


def _drifted_outcome(tmp_path):
    from hpm_ray.drift.monitor import CheckOutcome

    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(size=400)})
    result = check_drift(ref, pd.DataFrame({"x": rng.normal(loc=2.0, size=400)}))
    return CheckOutcome("m", "1", result, tmp_path / "drift.json", tmp_path / "drift.html", ["x"])


def fake_served_data(monkeypatch, monitor):
    """The labelled window as the retrain would read it (its join has tests of its own below)."""
    from hpm_ray.drift.retrain_data import RetrainData

    data = RetrainData(pd.DataFrame({"x": [0.1, 0.2]}), np.array([0, 1]), ("r1",), 2, 0)
    monkeypatch.setattr(monitor, "served_training_data", lambda spec, c: data)


class _App:
    """The admin API as the watcher sees it (``serving.client.call``): a status and a record of POSTs."""

    def __init__(self, challenger=None, stage="idle"):
        self.status = {
            "model": "m",
            "variants": {"champion": "1", "challenger": challenger},
            "stage": stage,
            "gates": {"classifier": {"f1": {"low": 0.1}}},
            "history": [],  # the admin view (the watcher sends its token)
        }
        self.posts = []

    def __call__(self, url, method, path, body=None, token=None, timeout=30.0):
        if method == "GET":
            return self.status
        self.posts.append((path, body, token))
        return {"ok": True, "detail": f"challenger v{body['challenger']} at {body['traffic']:g}%"}


@pytest.mark.parametrize("passed", [True, False])
def test_watch_gates_decide_the_ab(mlflow_uri, tmp_path, monkeypatch, passed):
    """After a retrain the app's gates decide: pass -> alias + A/B at --traffic; refused -> neither. Each
    step is a decision tag on the MLflow run."""
    from mlflow.tracking import MlflowClient

    from hpm_ray.drift import monitor
    from hpm_ray.registry import aliases
    from hpm_ray.registry.gates import GateResult
    from hpm_ray.serving import client as serving_client

    app, set_aliases, gated = _App(), [], []
    monkeypatch.setattr(monitor, "run_check", lambda spec, log: _drifted_outcome(tmp_path))
    monkeypatch.setattr(monitor, "_retrain", lambda spec, model, out, X, y, ids: "7")
    fake_served_data(monkeypatch, monitor)
    monkeypatch.setattr(serving_client, "call", app)
    monkeypatch.setattr(aliases, "set_alias", lambda *a, **k: set_aliases.append(a))
    monkeypatch.setattr(
        aliases,
        "check_gates",
        lambda name, v, g: gated.append((v, g)) or GateResult(passed, () if passed else ("auc: 0.6 < 0.75",)),
    )
    r = monitor.watch_once(
        WatchSpec(token="tok", traffic=10, alarm_k=1, alarm_n=1, out=str(tmp_path)), lambda msg: None
    )
    assert gated == [("7", app.status["gates"])]  # the app's configured gates
    tags = MlflowClient().get_run(r["run_id"]).data.tags
    if passed:
        assert r["action"] == "ab_started" and set_aliases == [("m", "challenger", "7")]
        assert app.posts == [("/ab/start", {"challenger": "7", "traffic": 10.0}, "tok")]
        assert tags["decision.ab"] == "started: challenger v7 at 10%"
    else:
        assert r["action"] == "refused" and set_aliases == [] and app.posts == []
        assert tags["decision.gates"].startswith("refused") and tags["decision.ab"].startswith("not started")
    assert tags["decision.retrain"].startswith("started") and tags["decision.register"].startswith("m v7")


def test_watch_does_not_retrain_while_an_ab_runs(mlflow_uri, tmp_path, monkeypatch):
    from hpm_ray.drift import monitor
    from hpm_ray.serving import client as serving_client

    app = _App(challenger="5", stage="rollout")
    monkeypatch.setattr(monitor, "run_check", lambda spec, log: _drifted_outcome(tmp_path))
    monkeypatch.setattr(monitor, "_retrain", lambda *a: pytest.fail("retrained during a running A/B"))
    monkeypatch.setattr(serving_client, "call", app)
    assert monitor.watch_once(WatchSpec(), lambda msg: None)["action"] == "skipped" and app.posts == []


def test_a_folder_of_unreadable_or_foreign_jsonl_is_a_data_error(tmp_path):
    (tmp_path / "a.jsonl").write_text("{not json\n")
    (tmp_path / "b.jsonl").write_text('{"x": 1}\n')  # JSON lines, but no served-row metadata
    with pytest.raises(DataError, match="no readable served rows"):
        read_window(tmp_path, 10)


def test_decision_log_records_corrected_p_values(mlflow_uri, tmp_path):
    """Each check's MLflow run has per feature the PSI, the missing rate and the BH-adjusted p-value that
    decided it, so a reader can see why a window alarmed (or did not) without the report."""
    from mlflow.tracking import MlflowClient

    from hpm_ray.drift.monitor import DecisionLog

    result = _drifted_outcome(tmp_path).result
    with DecisionLog("drift-check", {}) as log:
        log.drift(result, "m", "1")
    metrics = MlflowClient().get_run(log.run_id).data.metrics
    x = result.features[0]
    assert x.drifted and metrics["q.x"] == pytest.approx(x.q_value) and metrics["q.x"] < result.fdr
    assert metrics["psi.x"] == pytest.approx(x.psi) and metrics["missing.x"] == 0.0 and metrics["drifted"] == 1.0


# --- retrain on what was served (issue 18 part 1) ------------------------------------------------------


def test_served_rows_carry_request_id_and_row(tmp_path):
    log = ServedLog(tmp_path)
    log.add("m", "champion", "1", *_frames(3), request_id="r1")
    log.add("m", "challenger", "2", *_frames(2, start=3), request_id="r2")
    log.flush()
    w = read_window(tmp_path, 10)
    assert w.meta["_request_id"].tolist() == ["r1"] * 3 + ["r2"] * 2 and w.meta["_row"].tolist() == [0, 1, 2, 0, 1]
    assert list(w.features.columns) == ["a", "b"]


def _window(rids, rows, a):
    from hpm_ray.serving.served import ServedWindow

    meta = pd.DataFrame({"_request_id": rids, "_row": rows})
    return ServedWindow(pd.DataFrame({"a": a, "b": [0.5] * len(a)}), pd.DataFrame(index=range(len(a))), meta)


def test_retrain_data_joins_labels_by_request_and_row_and_adds_reference():
    from hpm_ray.drift.retrain_data import retrain_data

    w = _window(["r1", "r1", "r2", "r3", None], [0, 1, 0, 0, 0], [10, 11, 12, 13, 14])
    labels = {"r1": [1, 0], "r3": [1], "other": [0]}  # r2 not labelled yet; the unlogged row has no id
    ref = (pd.DataFrame({"b": [0.1, 0.2, 0.3], "a": [1, 2, 3]}), np.array([0, 1, 0]))
    d = retrain_data(w, labels, ["a", "b"], ref, min_labels=3, reference_rows=2)
    assert d.X["a"].tolist()[:3] == [10, 11, 13] and d.y[:3].tolist() == [1, 0, 1]
    assert d.request_ids == ("r1", "r3") and (d.n_served, d.n_reference) == (3, 2)
    assert list(d.X.columns) == ["a", "b"] and set(d.X["a"].tolist()[3:]) <= {1, 2, 3} and len(d.y) == 5


@pytest.mark.parametrize(
    "labels, columns, ref_cols, match",
    [
        ({"r1": [1, 0]}, ["a", "b"], ["a", "b"], r"only 2 served row\(s\) have labels; retraining needs 3"),
        ({}, ["a", "b"], ["a", "b"], r"only 0 served row\(s\)"),  # a prediction log with no labels
        ({"r1": [1, 1], "r2": [1]}, ["a", "b"], ["a", "b"], "one class only"),
        ({"r1": [1, 0], "r2": [1]}, ["a", "c"], ["a", "c"], r"served window has other columns.*lacks 'c'.*adds b"),
        ({"r1": [1, 0], "r2": [1]}, ["a", "b"], ["a"], r"reference training data has other columns.*lacks 'b'"),
    ],
)
def test_retrain_data_refuses_unfit_windows(labels, columns, ref_cols, match):
    from hpm_ray.drift.retrain_data import retrain_data

    w = _window(["r1", "r1", "r2"], [0, 1, 0], [1, 2, 3])
    ref = (pd.DataFrame({c: [1.0, 2.0] for c in ref_cols}), np.array([0, 1]))
    with pytest.raises(DataError, match=match):
        retrain_data(w, labels, columns, ref, min_labels=3)


def test_prediction_log_labels_for_an_app(tmp_path):
    from hpm_ray.serving.predlog import Label, Prediction, PredictionLog, new_request_id

    plog = PredictionLog(f"sqlite:///{tmp_path / 'p.sqlite'}")
    out = {"classes": ["0", "1"], "proba": [[0.8, 0.2], [0.3, 0.7]]}
    a, b, c = new_request_id(), new_request_id(), new_request_id()
    plog.append([Prediction(a, "app", "champion", "1", out), Prediction(b, "app", "champion", "1", out)])
    plog.append([Prediction(c, "other", "champion", "1", out)])
    plog.join([Label(a, [1, 0]), Label(c, [0, 0])])
    assert plog.labels_for("app", [a, b, c, "nope"]) == {a: [1, 0]}  # b unlabelled, c another app's
    plog.close()


def test_a_reference_without_a_served_column_is_refused(mlflow_uri, monkeypatch):
    """Served rows hold exactly the serving model's columns: a reference that lacks one belongs to another
    model, and comparing with it would silently skip that column."""
    from hpm_ray.drift import monitor
    from hpm_ray.drift.monitor import CheckSpec
    from hpm_ray.registry import aliases, reference
    from hpm_ray.registry.reference import Reference
    from hpm_ray.serving import served
    from hpm_ray.serving.served import ServedWindow

    rng = np.random.default_rng(0)
    cur = pd.DataFrame({"x": rng.normal(size=300), "town": ["a"] * 300})
    meta = pd.DataFrame({"_time": np.arange(300.0), "_model": "m", "_variant": "champion", "_version": "1"})
    window = ServedWindow(cur, pd.DataFrame({"proba_1": rng.uniform(size=300)}), meta)
    monkeypatch.setattr(served, "read_window", lambda d, n: window)
    monkeypatch.setattr(aliases, "resolve_version", lambda *a: "1")
    ref = Reference(pd.DataFrame({"x": rng.normal(size=300)}), pd.DataFrame({"proba_1": rng.uniform(size=300)}))
    monkeypatch.setattr(reference, "load_reference", lambda *a: ref)
    with pytest.raises(DataError, match="lacks served column.*'town'"):
        monitor.run_check(CheckSpec(model="m"))
