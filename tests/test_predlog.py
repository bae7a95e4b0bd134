"""The durable prediction log on a temporary sqlite file (no Ray): append, join outcomes, retention, scores."""

import json
import math
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from hpm_ray.serving.predlog import (
    Label,
    Prediction,
    PredictionLog,
    default_url,
    new_request_id,
    outputs_of,
    request_time,
    score_rows,
)

CLS = {"classes": ["0", "1"], "proba": [[0.8, 0.2]]}


@pytest.fixture
def plog(tmp_path):
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.sqlite'}", max_age_days=1.0, max_rows=None)
    yield log
    log.close()


def pred(rid, variant="champion", version="3", outputs=CLS, t=None, app="a"):
    return Prediction(rid, app, variant, version, outputs, request_time(rid) if t is None else t)


def test_request_ids_carry_their_time_and_are_unique():
    rid = new_request_id(1_700_000_000.123)
    assert len(rid) == 32 and request_time(rid) == pytest.approx(1_700_000_000.123, abs=1e-3)
    assert new_request_id() != new_request_id()
    assert request_time("nope") is None and request_time("z" * 32) is None


def test_outputs_of_classifier_and_forecaster_frames():
    out = outputs_of(pd.DataFrame({"prediction": [1], "proba_0": [0.3], "proba_1": [0.7]}))
    assert out == {"classes": ["0", "1"], "proba": [[0.3, 0.7]]}
    q = outputs_of(pd.DataFrame({"q_0.1": [1.0], "q_0.9": [3.0], "lower_90": [0.5]}))
    assert q == {"quantiles": [0.1, 0.9], "values": [[1.0, 3.0]]}
    assert outputs_of(pd.DataFrame({"prediction": [2.0]})) is None
    # several rows stay rows (one list per row, classes in column order), integer columns come back as floats
    three = pd.DataFrame({"prediction": [2, 0], "proba_a": [0.1, 0.6], "proba_b": [0.2, 0.3], "proba_c": [0.7, 0.1]})
    assert outputs_of(three) == {"classes": ["a", "b", "c"], "proba": [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]}
    ints = outputs_of(pd.DataFrame({"q_0.5": [1, 2], "q_0.9": [3, 4]}))
    assert ints["values"] == [[1.0, 3.0], [2.0, 4.0]] and isinstance(ints["values"][0][0], float)


def test_scores_by_hand():
    out = {"classes": ["0", "1"], "proba": [[0.8, 0.2], [0.4, 0.6]]}
    np.testing.assert_allclose(score_rows(out, [0, 1.0]), [-math.log(0.8), -math.log(0.6)])
    np.testing.assert_allclose(score_rows(out, ["1", True], "brier"), [0.8**2, 0.4**2])  # binary: (p1 - y)^2
    fc = {"quantiles": [0.1, 0.9], "values": [[1.0, 3.0]]}
    # y = 4: 0.1 * 3 = 0.3 and 0.9 * 1 = 0.9, mean 0.6
    np.testing.assert_allclose(score_rows(fc, [4.0]), [0.6])


@pytest.mark.parametrize("labels", [[2], ["yes"], [None], [[1]], [0, 1]])
def test_labels_outside_the_classes_or_miscounted_are_invalid(plog, labels):
    rid = new_request_id()
    plog.append([pred(rid)])
    (r,) = plog.join([Label(rid, labels)])
    assert (r.outcome, r.status) == ("invalid", 422) and r.reason
    assert plog.scores_since("a", 0) == []  # nothing stored: a corrected label still joins
    assert plog.join([Label(rid, [1])])[0].outcome == "joined"


def test_a_forecasts_value_before_its_horizon_passed_is_too_early(plog):
    """Issue 16 bad input: a 2-bar forecast on 60 s bars is realised 120 s after it was made; a value posted
    before then is refused (425) and stores nothing, the same value after it joins."""
    made = 1_800_000_000.0
    rid = new_request_id(made)
    plog.append([pred(rid, outputs={"quantiles": [0.1, 0.9], "values": [[1.0, 3.0]], "matures_s": 120.0}, t=made)])
    (r,) = plog.join([Label(rid, [4.0])], now=made + 119)
    assert (r.outcome, r.status) == ("early", 425) and "1 s from now" in r.reason
    assert plog.scores_since("a", 0) == []
    assert plog.join([Label(rid, [4.0])], now=made + 120)[0].outcome == "joined"


def test_a_forecaster_records_when_its_forecast_matures():
    from hpm_ray.hpo.conformal import ConformalQuantiles
    from hpm_ray.hpo.pyfunc import FORECAST_KEY, NaiveForecaster, maturity_s

    cq = ConformalQuantiles([0.05, 0.5, 0.95]).fit(np.tile([-1.0, 0.0, 1.0], (20, 1)), np.zeros(20))
    hourly = pd.DataFrame({"ret_1": [0.0] * 4}, index=pd.date_range("2024-01-01", periods=4, freq="h"))
    m = NaiveForecaster(np.array([-1.0, 0.0, 1.0]), cq, hourly, 48)
    assert m.mlmodel_metadata()[FORECAST_KEY] == {"horizon": 48, "bar_seconds": 3600.0}
    assert maturity_s(m.mlmodel_metadata()) == 48 * 3600.0
    untimed = NaiveForecaster(np.array([-1.0, 0.0, 1.0]), cq, hourly.reset_index(drop=True), 48)
    assert maturity_s(untimed.mlmodel_metadata()) is None  # no time index: no maturity check


def test_join_outcomes_and_version_credit(plog, tmp_path):
    now = 1_800_000_000.0
    a, b, c = (new_request_id(now - 10) for _ in range(3))
    plog.append(
        [
            pred(a, "champion", "3"),
            pred(a, "shadow", "5", {"classes": ["0", "1"], "proba": [[0.5, 0.5]]}),
            pred(b, "challenger", "4"),
            pred(c, "champion", "3"),
        ]
    )
    res = plog.join(
        [Label(a, [0]), Label(b, [1]), Label(b, [1]), Label(new_request_id(now), [0]), Label("x" * 7, [0])], now=now
    )
    assert [r.outcome for r in res] == ["joined", "joined", "duplicate", "unknown", "unknown"]
    assert [r.status for r in res] == [200, 200, 409, 404, 404]
    assert plog.join([Label(a, [1])], now=now)[0].outcome == "duplicate"  # later too: never counted twice
    rows = plog.scores_since("a", 0)
    assert [r.request_id for r in rows] == [a, b]
    credit = {(s.variant, s.version): s.scores for r in rows for s in r.scored}
    assert credit == {
        ("champion", "3"): (pytest.approx(-math.log(0.8)),),
        ("shadow", "5"): (pytest.approx(math.log(2)),),
        ("challenger", "4"): (pytest.approx(-math.log(0.2)),),
    }
    assert plog.scores_since("a", rows[0].seq) == rows[1:] and plog.scores_since("other", 0) == []
    # durable: a second handle on the same file (a restarted app) sees the labels, and sqlite runs in WAL mode
    again = PredictionLog(plog.url, max_age_days=1.0)
    assert [r.request_id for r in again.scores_since("a", 0)] == [a, b]
    assert again.join([Label(c, [0])], now=now)[0].outcome == "joined"
    again.close()
    with sqlite3.connect(tmp_path / "p.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert json.loads(con.execute("SELECT label FROM labels WHERE request_id = ?", (b,)).fetchone()[0]) == [1]


def test_retention_by_age_and_rows_makes_old_ids_expired(tmp_path):
    log = PredictionLog(f"sqlite:///{tmp_path / 'r.sqlite'}", max_age_days=1.0, max_rows=3)
    now = 1_800_000_000.0
    old = new_request_id(now - 2 * 86400)
    recent = [new_request_id(now - 60 * k) for k in range(5, 0, -1)]  # oldest first
    log.append([pred(old)] + [pred(r) for r in recent])
    assert log.join([Label(recent[0], [1])], now=now)[0].outcome == "joined"
    assert log.prune(now) == 3 and log.count() == 3  # the 2-day-old one by age, two more by rows
    res = log.join([Label(old, [1]), Label(recent[1], [1]), Label(recent[4], [1])], now=now)
    assert [(r.outcome, r.status) for r in res] == [("expired", 422), ("expired", 422), ("joined", 200)]
    assert "retention" in res[0].reason
    assert [r.request_id for r in log.scores_since("a", 0)] == [recent[4]]  # labels of pruned rows went too
    # an id newer than anything pruned that was never logged is unknown, not expired
    assert log.join([Label(new_request_id(now), [1])], now=now)[0].outcome == "unknown"
    log.close()


def test_concurrent_joins_of_one_id_count_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    log = PredictionLog(url)
    rids = [new_request_id() for _ in range(200)]
    log.append([pred(r) for r in rids])
    outcomes: list[str] = []

    def worker():
        mine = PredictionLog(url)  # its own engine: like another router replica
        for k in range(0, len(rids), 20):
            outcomes.extend(r.outcome for r in mine.join([Label(r, [1]) for r in rids[k : k + 20]]))
        mine.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("joined") == 200 and outcomes.count("duplicate") == 400
    assert len(log.scores_since("a", 0)) == 200
    log.close()


def test_default_url_is_next_to_the_state_db_unless_the_env_says(tmp_path, monkeypatch):
    monkeypatch.delenv("HPM_RAY_PREDICTION_LOG", raising=False)
    assert default_url(tmp_path / "ab_state.sqlite") == f"sqlite:///{tmp_path.resolve() / 'predictions.sqlite'}"
    monkeypatch.setenv("HPM_RAY_PREDICTION_LOG", "postgresql://db/hpm")
    assert default_url(tmp_path / "ab_state.sqlite") == "postgresql://db/hpm"


def test_labels_csv_groups_rows_per_request_and_refuses_bad_files(tmp_path, capsys):
    from hpm_ray.cli import main
    from hpm_ray.serving.cli import read_labels

    f = tmp_path / "labels.csv"
    f.write_text("request_id,label,note\nr1,1,x\nr2,no,y\nr1,0.5,z\n")
    assert read_labels(str(f)) == [{"request_id": "r1", "labels": [1, 0.5]}, {"request_id": "r2", "labels": ["no"]}]
    for text, message in (
        ("id,label\n1,2\n", "missing request_id"),
        ("request_id,label\n", "no labels"),
        ("request_id,label\nr1,\n", "line 2: empty request_id or label"),
    ):
        f.write_text(text)
        assert main(["ab", "feedback", "--file", str(f), "--url", "http://127.0.0.1:9"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["ab", "feedback", "--file", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_labels_move_a_forecasters_online_trackers_once_and_durably(tmp_path):
    """Each joined label moves the trackers of the version that answered, in the label's transaction, by the
    served margin: misses widen, hits narrow (by hand); a duplicate moves nothing; a reopened log reads them back."""
    from hpm_ray.hpo.online import OnlineCalibration, PIDLevel
    from hpm_ray.serving.online import adaptive, state_from_json

    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    log = PredictionLog(url)
    # one 90 % level on columns 0/2, step 0.1, two volatility groups (cut at 1.0) starting at 0.5 and 1.0
    cal = OnlineCalibration("pid", 0.01, (PIDLevel("90", 0, 2, 0.1, 0.1, (0.5, 1.0)),), "rv", False, (1.0,))
    state, n = log.start_online("a", "7", cal.to_dict())
    assert n == 0 and state_from_json(state) == cal.start()
    values = [[-1.0, 0.0, 1.0]]

    def serve(rid, vol):
        rows, record = adaptive(cal, state_from_json(log.online_states("a", ["7"])["7"][0]), np.array(values), vol)
        out = {"quantiles": [0.05, 0.5, 0.95], "values": values, "online": record}
        log.append([pred(rid, version="7", outputs=out)])
        return rows[0]

    a, b, c = (new_request_id() for _ in range(3))
    assert serve(a, np.array([0.5])) == {"lo_90": -1.5, "hi_90": 1.5}  # group 0: margin 0.5
    assert serve(b, np.array([0.5])) == {"lo_90": -1.5, "hi_90": 1.5}  # a's label not known yet
    assert serve(c, np.array([2.0])) == {"lo_90": -2.0, "hi_90": 2.0}  # group 1: margin 1.0
    # a: y = 3 -> score 2 > 0.5, a miss: 0.5 + 0.1 * 0.9 = 0.59; b: y = 0 -> score -1, a hit: 0.59 - 0.01 = 0.58
    # c (group 1): y = -1.5 -> score 0.5 <= 1.0, a hit: 1.0 - 0.01 = 0.99
    done = log.join([Label(a, [3.0]), Label(b, [0.0]), Label(c, [-1.5]), Label(a, [9.0])])
    assert [j.outcome for j in done] == ["joined", "joined", "joined", "duplicate"]
    assert log.join([Label(b, [9.0])])[0].outcome == "duplicate"
    log.close()
    reopened = PredictionLog(url)
    state, n = reopened.online_states("a", ["7"])["7"]
    assert n == 3
    (g0, g1) = state_from_json(state)["90"]
    assert (g0.p, g0.n, g1.p, g1.n) == (pytest.approx(0.58), 2, pytest.approx(0.99), 1)
    assert reopened.start_online("a", "7", cal.to_dict()) == (state, 3)  # a restart continues, never restarts
    assert reopened.online_states("a", ["8"]) == {} and reopened.online_states("other", ["7"]) == {}
    reopened.close()
