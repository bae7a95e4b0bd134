"""Pure parts of the drift loop: interval parsing, served rows in the prediction log (window, labelled join,
retention, old logs), the retrain data and its held-out block, prediction scores, the verdict/report, and the
watch loop's handling of refused checks."""

import json
import time

import numpy as np
import pandas as pd
import pytest

from hpm_ray.drift.checks import check_drift
from hpm_ray.drift.monitor import WatchSpec, parse_interval, watch
from hpm_ray.drift.report import verdict, write_report
from hpm_ray.errors import DataError, HPMError, SpecError
from hpm_ray.registry.reference import prediction_score
from hpm_ray.serving.predlog import Label, Prediction, PredictionLog, new_request_id
from hpm_ray.serving.served import LabelledRows, labelled_rows, read_window


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
    out = {"classes": ["0", "1"], "proba": [[0.25, 0.75]] * n}
    return frame, out


def _log(tmp_path) -> PredictionLog:
    return PredictionLog(f"sqlite:///{tmp_path / 'p.sqlite'}")


def _served(rid, n, start=0, app="app", model="m", variant="champion", version="1", t=None):
    """An answered request with its feature rows, as the router logs it."""
    frame, out = _frames(n, start)
    return Prediction(rid, app, variant, version, out, time=t or time.time(), model=model, features=frame)


def test_the_window_is_the_newest_served_rows_of_the_app_with_their_answers(tmp_path):
    one, two = _log(tmp_path), _log(tmp_path)  # two router replicas writing one log
    r1, r2, r3, r4 = (new_request_id() for _ in range(4))
    one.append([_served(r1, 5, 0, t=100.0)])
    two.append([_served(r2, 5, 100, variant="challenger", version="2", t=101.0)])
    out = {"classes": ["0", "1"], "proba": [[0.5, 0.5]] * 5}
    two.append([Prediction(r2, "app", "shadow", "3", out, time=101.0)])  # a shadow's answer: no served rows
    one.append([_served(r3, 3, 200, app="other", t=102.0)])  # another app's traffic
    w = read_window(one, "app", 7)
    assert list(w.features["a"]) == [3, 4, 100, 101, 102, 103, 104] and list(w.features.columns) == ["a", "b"]
    assert list(w.meta["_version"]) == ["1"] * 2 + ["2"] * 5 and list(w.meta["_variant"])[-1] == "challenger"
    assert list(w.meta["_request_id"]) == [r1] * 2 + [r2] * 5 and list(w.meta["_row"]) == [3, 4, 0, 1, 2, 3, 4]
    assert list(w.outputs.columns) == ["proba_0", "proba_1"] and w.outputs["proba_1"].tolist() == [0.75] * 7
    assert set(w.meta["_model"]) == {"m"} and list(w.meta["_time"]) == [100.0] * 2 + [101.0] * 5
    assert len(read_window(one, "app", 1000).features) == 10
    nan = Prediction(r4, "app", "champion", "1", out, time=103.0, model="m", features=_frames(1)[0].assign(b=np.nan))
    one.append([nan])  # a missing value stays missing (the PSI's missing bin sees it)
    assert read_window(one, "app", 1).features["b"].isna().all()
    with pytest.raises(DataError, match="no served rows of app 'none'"):
        read_window(one, "none", 10)
    # a forecaster's answers are its quantiles; a request of another schema is aligned by column name
    q = {"quantiles": [0.1, 0.9], "values": [[1.0, 2.0]]}
    wide = pd.DataFrame({"a": [7], "c": ["x"]})
    one.append([Prediction(new_request_id(), "fc", "champion", "1", q, time=1.0, model="f", features=wide)])
    one.append([Prediction(new_request_id(), "fc", "champion", "1", q, time=2.0, model="f", features=_frames(1)[0])])
    w = read_window(one, "fc", 10)
    assert list(w.outputs.columns) == ["q_0.1", "q_0.9"] and w.outputs["q_0.9"].tolist() == [2.0, 2.0]
    assert list(w.features.columns) == ["a", "c", "b"] and w.features["c"].tolist()[0] == "x"
    assert w.features["b"].isna().tolist() == [True, False]
    one.close(), two.close()


def test_served_features_come_back_exactly(tmp_path):
    """The retrain learns from, and the new reference is, what the log gives back. A frame of one numeric dtype is
    stored packed (bytes, not per-cell JSON): floats bit for bit (-0.0, the smallest subnormal, NaN), integers
    beyond 2**53 as integers. Any other frame is JSON rows: every float exact (pandas' to_json would keep 10
    decimal places), integers, strings and gaps as they were. A row an older router stored as JSON rows reads as
    it did."""
    import sqlalchemy as sa

    plog = _log(tmp_path)
    mixed = pd.DataFrame({"v": [3.3e-12, 1.23456789e-7, np.nan], "n": [1, 2, 3], "town": ["a", None, "c"]})
    floats = pd.DataFrame({"x": [-0.0, 5e-324, np.nan], "y": [1e308, 0.1, 1 / 3]})
    ints = pd.DataFrame({"i": [2**62 + 1, -(2**62), 7], "j": [1, 2, 3]})
    ids = [new_request_id() for _ in range(4)]
    frames = [("mixed", mixed), ("f", floats), ("i", ints), ("f", floats)]
    plog.append(
        [Prediction(r, "app", "champion", "1", _frames(3)[1], model=m, features=f) for r, (m, f) in zip(ids, frames)]
    )
    s = plog.served.c
    with plog.engine.begin() as conn:  # ids[3] as a router wrote it before the packed form: JSON rows
        rows = {"columns": ["x", "y"], "data": [[0.5, None], [2.0, 3.0], [1e-300, 4.0]]}
        conn.execute(plog.served.update().where(s.request_id == ids[3]).values(features=json.dumps(rows)))
        stored = json.loads(conn.execute(sa.select(s.features).where(s.request_id == ids[1])).scalar_one())
    assert "zlib" in stored and "data" not in stored
    assert [j.outcome for j in plog.join([Label(r, [0, 1, 0]) for r in ids])] == ["joined"] * 4
    back = labelled_rows(plog, "app", "mixed").features
    assert back["v"].tolist()[:2] == [3.3e-12, 1.23456789e-7] and np.isnan(back["v"].iloc[2])
    assert back["n"].tolist() == [1, 2, 3] and back["town"].tolist()[0] == "a" and pd.isna(back["town"].iloc[1])
    back = labelled_rows(plog, "app", "f").features
    x = back["x"].to_numpy()
    assert np.signbit(x[0]) and x[0] == 0 and x[1] == 5e-324 and np.isnan(x[2])
    assert back["y"].tolist()[:3] == [1e308, 0.1, 1 / 3]
    assert x[3:].tolist() == [0.5, 2.0, 1e-300] and np.isnan(back["y"].iloc[3])
    back = labelled_rows(plog, "app", "i").features
    assert back["i"].tolist() == [2**62 + 1, -(2**62), 7] and back["j"].tolist() == [1, 2, 3]
    plog.close()


def test_labelled_rows_join_features_to_late_labels_by_request_and_row(tmp_path):
    plog = _log(tmp_path)
    a, b, c, d, e = (new_request_id() for _ in range(5))
    plog.append([_served(a, 2, 0, t=10.0), _served(b, 1, 10, t=11.0), _served(c, 2, 20, t=12.0)])
    plog.append([_served(d, 1, 30, app="other", t=13.0), _served(e, 1, 40, model="m2", t=14.0)])
    joined = plog.join([Label(a, [1, 0]), Label(c, [0, 1]), Label(d, [1]), Label(e, [1])])
    assert [j.outcome for j in joined] == ["joined"] * 4  # b stays unlabelled
    rows = labelled_rows(plog, "app", "m")
    assert list(rows.features["a"]) == [0, 1, 20, 21] and rows.labels == [1, 0, 0, 1]
    assert rows.ids == (f"{a}:0", f"{a}:1", f"{c}:0", f"{c}:1")
    assert labelled_rows(plog, "app", "m", since=12.0).ids == (f"{c}:0", f"{c}:1")  # the label window
    assert labelled_rows(plog, "app", "m", rows=2).ids == (f"{c}:0", f"{c}:1")  # the newest requests holding 2 rows
    assert labelled_rows(plog, "app", "m", rows=3).ids == rows.ids
    assert labelled_rows(plog, "app").ids[-1] == f"{e}:0"  # any model of the app
    assert labelled_rows(plog, "nope").labels == []
    with pytest.raises(DataError, match=r"belong to other model\(s\) \['m', 'm2'\], none to 'm3'"):
        labelled_rows(plog, "app", "m3")  # labels for another model only: said so, not "0 labelled rows"
    plog.close()


def test_a_retrain_reads_no_more_served_rows_than_it_may_keep(tmp_path, monkeypatch):
    from hpm_ray.drift import monitor
    from hpm_ray.serving import served

    asked = []

    def read(log, app, model, since, rows):
        asked.append(rows)
        raise DataError("read")

    monkeypatch.setattr(served, "labelled_rows", read)
    spec = WatchSpec(prediction_log=f"sqlite:///{tmp_path / 'p.sqlite'}")
    with pytest.raises(DataError, match="read"):
        monitor.served_training_data(spec, _drifted_outcome(tmp_path))
    assert asked == [spec.distill.max_rows] == [10_000]


def test_served_rows_live_and_go_with_their_predictions(tmp_path):
    """Retention is the prediction log's (by age): a month-late label still finds its features, however much
    traffic came since, and pruned predictions take their features with them."""
    day = 86400.0
    plog = PredictionLog(f"sqlite:///{tmp_path / 'p.sqlite'}", max_age_days=60)
    old, late = new_request_id(1000 * day), new_request_id(1030 * day)
    plog.append([_served(old, 1, 0, t=1000 * day), _served(late, 2, 5, t=1030 * day)])
    plog.append([_served(new_request_id(), 1, 100, t=1031 * day) for _ in range(300)])  # heavy traffic since
    assert plog.prune(now=1065 * day) == 1  # the 65-day-old prediction and its features go
    assert plog.join([Label(late, [0, 1])], now=1065 * day)[0].outcome == "joined"  # 35 days late
    assert labelled_rows(plog, "app").ids == (f"{late}:0", f"{late}:1")
    assert len(read_window(plog, "app", 10_000).features) == 302
    plog.close()


def test_a_log_written_before_served_rows_existed_opens_and_gains_the_table(tmp_path):
    import sqlalchemy as sa

    plog = _log(tmp_path)
    rid = new_request_id()
    plog.append([_served(rid, 2)])
    with plog.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE served"))  # the schema of an issue-14 log
    plog.close()
    again = _log(tmp_path)
    assert again.count() == 1 and again.join([Label(rid, [0, 1])])[0].outcome == "joined"
    assert labelled_rows(again, "app").labels == []  # its requests have no features to learn from
    again.append([_served(new_request_id(), 3)])
    assert len(read_window(again, "app", 10).features) == 3
    again.close()


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


def test_watch_refuses_data_without_its_target_before_the_first_check(tmp_path, monkeypatch):
    from hpm_ray.drift import monitor

    monkeypatch.setattr(monitor, "watch_once", lambda spec, say: pytest.fail("checked before reading --data"))
    table = tmp_path / "t.csv"
    pd.DataFrame({"x": [1, 2], "label": [0, 1]}).to_csv(table, index=False)
    with pytest.raises(DataError, match="target column.*'default'"):
        watch(WatchSpec(data=str(table), target="default", iterations=3), print, lambda s: None)


def test_drift_flags_set_max_categories():
    from hpm_ray.cli import build_parser
    from hpm_ray.config import load_spec
    from hpm_ray.drift.cli import _fields
    from hpm_ray.drift.monitor import CheckSpec

    for argv, want in ((["--max-categories", "5"], 5), ([], 20)):
        args = build_parser().parse_args(["drift", "check", *argv])
        assert load_spec(CheckSpec, None, _fields(args)).max_categories == want


def _drifted_outcome(tmp_path):
    from hpm_ray.drift.monitor import CheckOutcome

    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(size=400)})
    result = check_drift(ref, pd.DataFrame({"x": rng.normal(loc=2.0, size=400)}))
    return CheckOutcome("m", "1", result, tmp_path / "drift.json", tmp_path / "drift.html", ["x"])


def fake_served_data(monkeypatch, monitor):
    """The labelled window as the retrain would read it (its join has tests of its own below)."""
    from hpm_ray.drift.retrain_data import RetrainData

    data = RetrainData(pd.DataFrame({"x": [0.1, 0.2, 0.3]}), np.array([0, 1, 0]), 2, ("r1:0", "r1:1"), ("r2:0",))
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
    monkeypatch.setattr(monitor, "_retrain", lambda spec, model, out, data: "7")
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


def _rows(a, labels):
    return LabelledRows(
        pd.DataFrame({"a": a, "b": [0.5] * len(a)}), list(labels), tuple(f"r{i}:0" for i in range(len(a)))
    )


def test_retrain_data_holds_out_served_rows_and_fits_on_the_rest_plus_reference():
    from hpm_ray.drift.retrain_data import retrain_data

    rows = _rows(list(range(20)), [0, 1] * 10)
    ref = (pd.DataFrame({"b": [0.1, 0.2, 0.3], "a": [100, 101, 102]}), np.array([0, 1, 0]))
    d = retrain_data(rows, ["a", "b"], ref, min_labels=10, reference_rows=2, test_size=0.25)
    X_fit, y_fit = d.fit()
    X_held, y_held = d.held_out()
    assert list(d.X.columns) == ["a", "b"] and d.n_reference == 2 and len(X_fit) == 15 + 2
    assert set(X_held["a"]) <= set(range(20)) and len(X_held) == 5 and set(y_held) == {0, 1}  # served, both classes
    assert set(X_fit["a"][:15]) == set(range(20)) - set(X_held["a"]) and set(X_fit["a"][15:]) <= {100, 101, 102}
    # each id is the row it names: fit ids -> the fit's served rows, held-out ids -> the held-out block, in order
    assert [int(i[1:-2]) for i in d.fit_ids] == list(X_fit["a"][:15]) and len(d.fit_ids) + 2 == d.n_fit
    assert [int(i[1:-2]) for i in d.held_out_ids] == list(X_held["a"])
    assert y_fit[:15].tolist() == [v % 2 for v in X_fit["a"][:15]] and y_held.tolist() == [v % 2 for v in X_held["a"]]


def test_retrain_data_keeps_the_newest_served_rows_that_fit_max_rows_and_lists_exactly_them():
    """Served rows beyond ``max_rows`` (less the reference rows) are left out, oldest first, and their ids are
    not recorded: the ids are exactly the rows in X."""
    from hpm_ray.drift.retrain_data import retrain_data

    rows = _rows(list(range(100)), [0, 1] * 50)  # oldest first
    ref = (pd.DataFrame({"a": [-1] * 30, "b": [0.0] * 30}), np.array([0, 1] * 15))
    d = retrain_data(rows, ["a", "b"], ref, min_labels=20, reference_rows=30, max_rows=70, test_size=0.2)
    assert len(d.X) == 70 and d.n_reference == 30 and len(d.fit_ids) + len(d.held_out_ids) == 40
    served = sorted([*d.X["a"][: d.n_fit - 30], *d.held_out()[0]["a"]])
    assert served == list(range(60, 100))  # the newest 40
    assert sorted(int(i[1:-2]) for i in d.fit_ids + d.held_out_ids) == served
    with pytest.raises(DataError, match="max_rows 40 leaves room for 10 served rows beside 30 reference rows"):
        retrain_data(rows, ["a", "b"], ref, min_labels=20, reference_rows=30, max_rows=40)
    # both classes among all labelled rows, but the newest 40 kept are all 0: nothing to learn from
    one_class = _rows(list(range(100)), [0, 1] * 30 + [0] * 40)
    with pytest.raises(DataError, match="the 40 newest labelled served rows hold one class only"):
        retrain_data(one_class, ["a", "b"], ref, min_labels=20, reference_rows=30, max_rows=70)


def test_the_retrained_models_reference_does_not_alarm_on_the_traffic_it_was_trained_for():
    """Issue 18 review, defect 2: after a drift, the retrained model's drift reference is the held-out block of
    shifted served rows, so more of the same shifted traffic raises no alarm (features and predictions); a
    reference of held-out rows drawn from served + table rows (the old choice) alarms on that same traffic."""
    from sklearn.linear_model import LogisticRegression

    from hpm_ray.drift.retrain_data import retrain_data

    rng = np.random.default_rng(0)

    def draw(n, shift):
        x = rng.normal(loc=1.5 if shift else 0.0, size=n)
        age = rng.integers(20, 40 if shift else 70, size=n)
        X = pd.DataFrame({"x": x, "age": age})
        return X, (rng.random(n) < 1 / (1 + np.exp(-(x - 0.05 * (age - 40))))).astype(int)

    Xs, ys = draw(1500, shift=True)
    rows = LabelledRows(Xs, list(ys), tuple(f"r{i}:0" for i in range(len(ys))))
    d = retrain_data(rows, ["x", "age"], draw(3000, shift=False), min_labels=200, reference_rows=2000)
    model = LogisticRegression().fit(*d.fit())
    held, _ = d.held_out()
    more, _ = draw(500, shift=True)
    score = lambda X: model.predict_proba(X)[:, 1]
    calm = check_drift(held, more, reference_pred=score(held), current_pred=score(more), min_rows=100)
    assert not calm.drifted, verdict(calm)
    mixed = d.X.sample(len(held), random_state=0)  # a held-out block drawn from every retrain row
    alarm = check_drift(mixed, more, reference_pred=score(mixed), current_pred=score(more), min_rows=100)
    assert alarm.drifted


def test_the_demo_serves_each_row_once_and_never_a_reference_row():
    """Issue 18 review, defect 2: the A/B judged the retrained model partly on rows it was fitted on (served rows
    drawn with replacement, reference rows from the whole table). Now every window draws unserved rows only."""
    from hpm_ray.drift.demo import QUICK, traffic

    X = pd.DataFrame({"AGE": np.where(np.arange(1000) % 2, 50, 25), "id": np.arange(1000)})
    y = np.zeros(1000, dtype=int)
    rng = np.random.default_rng(0)
    pool = np.arange(200, 1000)  # rows 0-199: the champion's fit and reference, and the retrain's reference table
    served = []
    for n, shift in ((100, False), (100, True), (300, True)):  # control window, drift window, A/B traffic
        Xs, ys, pool = traffic(X, y, pool, n, QUICK, shift, rng)
        served.append(Xs["id"].to_numpy())
        assert len(Xs) == n and (ys[Xs["AGE"] > 30] == 0).all()  # only the young default more
    ids = np.concatenate(served)
    assert len(set(ids)) == len(ids) == 500 and ids.min() >= 200 and len(pool) == 300
    assert (X["AGE"].to_numpy()[served[2]] <= 30).sum() == 240  # QUICK's 80 % young
    with pytest.raises(HPMError, match=r"has \d+ unserved rows aged <= 30 left, the traffic needs 240"):
        traffic(X, y, pool, 300, QUICK, True, rng)


@pytest.mark.parametrize(
    "labels, columns, ref_cols, match",
    [
        ([1, 0], ["a", "b"], ["a", "b"], r"only 2 served row\(s\) have labels; retraining needs 3"),
        ([], ["a", "b"], ["a", "b"], r"only 0 served row\(s\)"),  # a prediction log with no labels
        ([1, 1, 1], ["a", "b"], ["a", "b"], "one class only"),
        ([1, 0, 1], ["a", "c"], ["a", "c"], r"labelled served data has other columns.*lacks 'c'.*adds b"),
        ([1, 0, 1], ["a", "b"], ["a"], r"reference training data has other columns.*lacks 'b'"),
        ([1, 0, 1], ["a", "b"], ["a", "b"], r"cannot hold out a stratified 20% of the 3 labelled served rows"),
    ],
)
def test_retrain_data_refuses_unfit_windows(labels, columns, ref_cols, match):
    from hpm_ray.drift.retrain_data import retrain_data

    rows = LabelledRows(pd.DataFrame({"a": [1, 2, 3][: len(labels)], "b": 0.5}), labels, ())
    ref = (pd.DataFrame({c: [1.0, 2.0] for c in ref_cols}), np.array([0, 1]))
    with pytest.raises(DataError, match=match):
        retrain_data(rows, columns, ref, min_labels=3)


def test_a_retrain_on_the_table_alone_holds_out_table_rows():
    from hpm_ray.drift.retrain_data import table_data

    X = pd.DataFrame({"b": np.arange(200.0), "a": np.arange(200)})
    y = np.arange(200) % 2
    d = table_data(X, y, ["a", "b"], max_rows=100, test_size=0.2)
    assert len(d.X) == 100 and d.n_fit == 80 and list(d.X.columns) == ["a", "b"] and d.fit_ids == ()
    assert d.y.tolist() == [v % 2 for v in d.X["a"]] and len(set(d.X["a"])) == 100
    with pytest.raises(DataError, match="lacks 'c'"):
        table_data(X, y, ["a", "b", "c"])


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
    monkeypatch.setattr(served, "read_window", lambda log, app, n: window)
    monkeypatch.setattr(aliases, "resolve_version", lambda *a: "1")
    ref = Reference(pd.DataFrame({"x": rng.normal(size=300)}), pd.DataFrame({"proba_1": rng.uniform(size=300)}))
    monkeypatch.setattr(reference, "load_reference", lambda *a: ref)
    with pytest.raises(DataError, match="lacks served column.*'town'"):
        monitor.run_check(CheckSpec(model="m"))


@pytest.mark.parametrize(
    "url, error, match",
    [
        ("not-a-url", SpecError, "prediction log 'not-a-url' is not a SQLAlchemy URL"),
        ("sqlite:////proc/no/such/dir/p.sqlite", DataError, "cannot be opened"),
    ],
)
def test_a_bad_prediction_log_is_one_line(url, error, match):
    from hpm_ray.drift.monitor import CheckSpec

    with pytest.raises(error, match=match):
        CheckSpec(prediction_log=url).open_log()
