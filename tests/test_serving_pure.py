"""Payload parsing and routing (pure): every malformed body is a specific 4xx, routing is weighted and sticky."""

import json
import random

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpm_ray.errors import HPMError
from hpm_ray.serving.client import call
from hpm_ray.serving.models import InputSpec, confidence
from hpm_ray.serving.predlog import outputs_of
from hpm_ray.serving.routing import choose, key_point, normalized, pick
from hpm_ray.serving.schemas import PayloadError, load_json, parse_payload, read_body

FEATURES = ["a", "b", "c"]


def parse(obj, integer_columns=(), spec=None, **kw):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_payload(body, spec or InputSpec(tuple(FEATURES), integer_columns), **kw).frame


def test_three_formats_give_the_same_frame():
    split = parse({"dataframe_split": {"columns": ["c", "a", "b"], "data": [[3, 1, 2], [6, 4, 5]]}})
    records = parse({"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"b": 5, "a": 4, "c": 6}]})
    rows = parse({"instances": [[1, 2, 3], [4, 5, 6]]})
    inst_records = parse({"instances": [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]})
    for frame in (split, records, rows, inst_records):
        assert list(frame.columns) == FEATURES
        np.testing.assert_array_equal(frame.to_numpy(), [[1, 2, 3], [4, 5, 6]])
    # all-float payloads take the one-block path; an integer column the per-column one: the same frame either way
    pd.testing.assert_frame_equal(split, pd.DataFrame({"a": [1.0, 4.0], "b": [2.0, 5.0], "c": [3.0, 6.0]}))
    mixed = parse({"instances": [[1, 2, 3], [4, 5, 6]]}, integer_columns=("b",))
    pd.testing.assert_frame_equal(mixed, split.astype({"b": np.int64}))


def test_integer_columns_cast_and_refuse_fractions():
    f = parse({"instances": [[1, 2.0, 3]]}, integer_columns=("b",))
    assert f["b"].dtype == np.int64 and f["a"].dtype == float
    with pytest.raises(PayloadError, match="column 'b': the model takes whole numbers"):
        parse({"instances": [[1, 2.5, 3]]}, integer_columns=("b",))


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{nope", 400, "malformed JSON"),
        (b"", 400, "empty body"),
        (b"\xff\xfe", 400, "malformed JSON"),
        ([1, 2], 400, "JSON object"),
        ({"rows": []}, 400, "exactly one of"),
        ({"instances": [], "dataframe_records": []}, 400, "exactly one of"),
        ({"dataframe_split": {"columns": ["a"]}}, 400, "needs 'columns'"),
        ({"dataframe_split": {"columns": FEATURES, "data": [[1, 2]]}}, 422, "row 0 must be a list of 3"),
        ({"instances": []}, 422, "empty batch"),
        ({"instances": [[1, 2]]}, 422, "row 0 has 2 values; the model takes 3"),
        ({"dataframe_records": [{"a": 1, "b": 2}]}, 422, "missing columns ['c']"),
        ({"dataframe_records": [{"a": 1, "b": 2, "c": "x"}]}, 422, "column 'c': expected a number, got str"),
        ({"dataframe_records": [{"a": 1, "b": True, "c": 3}]}, 422, "got bool"),
        ({"dataframe_records": [{"a": 1, "b": None, "c": 3}]}, 422, "does not take missing values"),
        (b'{"instances": [[1, NaN, 3]]}', 422, "not a finite number"),
        (b'{"instances": [[1, Infinity, 3]]}', 422, "not a finite number"),
        ({"dataframe_records": [{"a": 1, "b": 2, "c": 3}, {"a": 1}]}, 422, "row 1 has different columns"),
        ({"dataframe_records": "abc"}, 400, "must be a list"),
        ({"dataframe_records": [5]}, 422, "row 0 must be an object"),
        ({"dataframe_split": {"columns": [1, 2, 3], "data": [[1, 2, 3]]}}, 422, "column names must be strings"),
        ({"instances": [[10**400, 1, 1]]}, 422, "number too large"),
    ],
)
def test_malformed_payloads(body, status, message):
    if isinstance(body, dict) and body.get("instances") == [[10**400, 1, 1]]:
        body = b'{"instances": [[1' + b"0" * 400 + b", 1, 1]]}"
    with pytest.raises(PayloadError) as err:
        parse(body)
    assert err.value.status == status
    assert message in err.value.message


MIXED = InputSpec(
    ("city", "age", "income"),
    strings=("city",),
    optional=("income", "city"),
    categories={"city": frozenset({"Oslo", "Lima"})},
)
FLAGS = InputSpec(("mobile", "age"), integer=("age",), booleans=("mobile",), nullable=True)


def test_true_false_columns_pass_booleans_and_integers_stay_whole():
    p = parse_payload(
        json.dumps({"instances": [{"mobile": True, "age": 3}, {"mobile": None, "age": None}]}).encode(), FLAGS
    )
    assert p.frame["mobile"].tolist()[0] is True and pd.isna(p.frame["mobile"].tolist()[1])
    assert p.frame["age"].dtype == float and np.isnan(p.frame.loc[1, "age"])  # a gap keeps the column float
    whole = parse_payload(json.dumps({"instances": [{"mobile": False, "age": 3.0}]}).encode(), FLAGS)
    assert whole.frame["age"].dtype == np.int64
    with pytest.raises(PayloadError, match="column 'mobile': expected true or false, got int"):
        parse_payload(json.dumps({"instances": [{"mobile": 1, "age": 3}]}).encode(), FLAGS)


def test_string_columns_optional_gaps_extra_columns_and_unseen_categories():
    body = {
        "dataframe_records": [
            {"age": 30, "city": "Oslo", "income": None, "id": 7},
            {"age": 41, "city": "Quito", "income": 2.5, "id": 8},
            {"age": 52, "city": None, "income": 1.0, "id": 9},
        ]
    }
    p = parse_payload(json.dumps(body).encode(), MIXED)
    assert list(p.frame.columns) == ["city", "age", "income"] and p.ignored == ("id",)
    assert p.frame["city"].tolist()[:2] == ["Oslo", "Quito"] and p.frame["city"].isna().tolist() == [False, False, True]
    assert p.unseen == {"city": 1}
    assert p.frame["age"].tolist() == [30.0, 41.0, 52.0] and np.isnan(p.frame.loc[0, "income"])
    left_out = parse_payload(
        json.dumps({"dataframe_split": {"columns": ["age", "city"], "data": [[1, "Lima"]]}}).encode(), MIXED
    )
    assert np.isnan(left_out.frame.loc[0, "income"]) and left_out.unseen == {}  # an optional column may be absent


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"age": 30, "city": 5, "income": 1.0}], "row 0, column 'city': expected a string, got int"),
        ([{"age": None, "city": "Oslo", "income": 1.0}], "row 0, column 'age': null, and this model does not take"),
        ([{"age": "x", "city": "Oslo", "income": 1.0}], "column 'age': expected a number, got str"),
        ([{"city": "Oslo", "income": 1.0}], "missing columns ['age']"),
    ],
)
def test_typed_columns_refuse_wrong_cells(records, message):
    with pytest.raises(PayloadError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")) as err:
        parse_payload(json.dumps({"dataframe_records": records}).encode(), MIXED)
    assert err.value.status == 422


def test_nan_allowed_when_the_model_takes_it():
    f = parse({"instances": [[1, None, 3]]}, allow_nan=True)
    assert np.isnan(f.loc[0, "b"])


def test_size_and_row_limits():
    with pytest.raises(PayloadError) as err:
        parse({"instances": [[1, 2, 3]] * 50}, max_bytes=100)
    assert err.value.status == 413
    with pytest.raises(PayloadError, match="11 rows; the limit is 10") as err:
        parse({"instances": [[1, 2, 3]] * 11}, max_rows=10)
    assert err.value.status == 413


def test_weighted_pick_boundaries_and_normalization():
    w = {"champion": 90, "challenger": 10}
    assert normalized(w) == {"champion": 0.9, "challenger": 0.1}
    assert pick(w, 0.0) == "champion" and pick(w, 0.8999) == "champion"
    assert pick(w, 0.9) == "challenger" and pick(w, 0.99999) == "challenger"
    assert pick({"champion": 0, "challenger": 5}, 0.0) == "challenger"
    with pytest.raises(ValueError):
        normalized({"champion": 0})
    with pytest.raises(ValueError):
        normalized({"champion": -1, "challenger": 2})


def test_random_split_matches_weights():
    rng = random.Random(0)
    picks = [choose({"champion": 75, "challenger": 25}, rng=rng) for _ in range(20_000)]
    assert abs(picks.count("challenger") / len(picks) - 0.25) < 0.015


def test_sticky_keys_are_stable_and_move_one_way():
    keys = [f"user-{i}" for i in range(2000)]
    assert all(0 <= key_point(k) < 1 for k in keys)
    at10 = {k: choose({"champion": 90, "challenger": 10}, k) for k in keys}
    assert at10 == {k: choose({"champion": 90, "challenger": 10}, k) for k in keys}
    at50 = {k: choose({"champion": 50, "challenger": 50}, k) for k in keys}
    assert all(
        at50[k] == "challenger" for k in keys if at10[k] == "challenger"
    )  # raising a weight never moves keys back
    assert abs(sum(v == "challenger" for v in at10.values()) / len(keys) - 0.10) < 0.03


def test_confidence_from_the_logged_outputs():
    out = pd.DataFrame(
        {"prediction": [1, 0, 2], "proba_0": [0.3, 0.8, 0.1], "proba_1": [0.7, 0.2, 0.3], "proba_2": [0.0, 0.0, 0.6]}
    )
    assert confidence(outputs_of(out)) == pytest.approx((0.7 + 0.8 + 0.6) / 3)
    assert confidence(outputs_of(pd.DataFrame({"q_0.5": [1.0]}))) is None


def test_serve_config_is_valid_for_serve_run_and_for_the_app():
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from hpm_ray.serving.app import ServeSpec

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "serve" / "ab.yaml").read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "hpm_ray.serving.app:build_app"
    spec = ServeSpec.model_validate(app.args)
    assert spec.max_ongoing_requests > 5 and data["http_options"]["host"] == "127.0.0.1"


@pytest.mark.parametrize("url", ["notaurl", "http://[::1"])
def test_ab_client_refuses_a_malformed_url_in_one_line(url):
    with pytest.raises(HPMError, match="--url: not an http"):
        call(url, "GET", "/ab/status")


def test_ab_client_names_a_server_that_is_not_the_ab_app():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>some other server</html>")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(HPMError, match="not with the A/B app's JSON"):
            call(f"http://127.0.0.1:{server.server_port}", "GET", "/ab/status", timeout=5)
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        (b'{"instances": [[' + b"9" * 5000 + b", 1, 2]]}", 422, "number too large: 5000 digits"),
        (b'{"label": -' + b"1" * 41 + b"}", 422, "41 digits"),
        (b"\xff\xfe{}", 400, "malformed JSON"),
        (b"  ", 400, "empty body"),
    ],
)
def test_load_json_refuses_what_would_crash_the_parser(body, status, message):
    with pytest.raises(PayloadError, match=message) as err:
        load_json(body, 10_000_000)
    assert err.value.status == status
    assert load_json(b'{"a": [1, -' + b"9" * 40 + b"]}", 100)["a"][1] == -int("9" * 40)
    # a long run of digits in a string or a float is no integer: accepted, as without one
    assert load_json(b'{"id": "' + b"7" * 60 + b'", "x": [3, 0.' + b"5" * 50 + b"]}", 1000) == {
        "id": "7" * 60,
        "x": [3, 0.5555555555555556],
    }


class _Request:
    """What read_body uses of a Starlette request: headers and the body as an async stream of chunks."""

    def __init__(self, chunks, length=None):
        self.headers = {} if length is None else {"content-length": str(length)}
        self.chunks, self.read = chunks, 0

    async def stream(self):
        for c in self.chunks:
            self.read += 1
            yield c


def test_read_body_caps_chunked_bodies_without_reading_them_in_full():
    import asyncio

    ok = _Request([b"ab", b"cd"])
    assert asyncio.run(read_body(ok, 4)) == b"abcd"
    chunked = _Request([b"x" * 3] * 1000)  # no Content-Length: 3,000 bytes in 1,000 chunks
    with pytest.raises(PayloadError, match="over 10 bytes") as err:
        asyncio.run(read_body(chunked, 10))
    assert err.value.status == 413 and chunked.read == 4  # stopped at the first chunk past the cap
    declared = _Request([b"x"], length=11)
    with pytest.raises(PayloadError, match="11 bytes"):
        asyncio.run(read_body(declared, 10))
    assert declared.read == 0


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda c: (
                st.lists(c, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["instances", "dataframe_split", "dataframe_records", "columns", "data", "a", "b", "c"]
                    ),
                    c,
                    max_size=4,
                )
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_body_is_a_frame_or_a_4xx(body):
    """Fuzz: whatever the bytes, parsing gives a frame of the model's columns or a PayloadError with a 4xx."""
    try:
        frame = parse_payload(body, MIXED, max_bytes=10_000, max_rows=50).frame
    except PayloadError as exc:
        assert 400 <= exc.status < 500 and exc.message
    else:
        assert list(frame.columns) == list(MIXED.features)


def test_online_intervals_of_a_request_and_the_update_of_its_labels_by_hand():
    """Adaptive intervals per row (normalised scores: margin times the row's volatility; tercile trackers), rows
    with an unusable volatility get none and move nothing, and a multi-row label moves the trackers row by row."""
    from hpm_ray.hpo.online import OnlineCalibration, PIDLevel, PIDState
    from hpm_ray.serving.online import adaptive, learn, state_from_json, state_to_json

    levels = (PIDLevel("90", 0, 3, 0.1, 0.5, (1.0, 2.0)), PIDLevel("50", 1, 2, 0.5, 0.1, (0.2, 0.4)))
    cal = OnlineCalibration("pid", 0.05, levels, "rv", True, (1.0,))
    values = np.array([[-1.0, -0.5, 0.5, 1.0]] * 3)
    state = cal.start()
    rows, rec = adaptive(cal, state, values, np.array([0.5, 2.0, np.nan]))
    # row 0: group 0, vol 0.5: 90 % margin 1.0 * 0.5, 50 % 0.2 * 0.5; row 1: group 1, vol 2: 2.0 * 2 and 0.4 * 2
    assert rows[0] == pytest.approx({"lo_90": -1.5, "hi_90": 1.5, "lo_50": -0.6, "hi_50": 0.6})
    assert rows[1] == pytest.approx({"lo_90": -5.0, "hi_90": 5.0, "lo_50": -1.3, "hi_50": 1.3})
    assert rows[2] is None and rec["group"] == [0, 1, None] and rec["scale"] == [0.5, 2.0, None]
    # labels: row 0 y = 1.6: 90 % score (1.6 - 1) / 0.5 = 1.2 > 1.0 (a miss: 1.0 + 0.5 * 0.9 = 1.45), 50 % score
    # (1.6 - 0.5) / 0.5 = 2.2 > 0.2 (a miss: 0.2 + 0.1 * 0.5 = 0.25); row 1 y = 0: 90 % score -1 / 2 (a hit:
    # 2.0 - 0.05 = 1.95), 50 % score -0.25 (a hit: 0.4 - 0.05 = 0.35); row 2 has no margin: nothing moves
    new = learn(cal, state, values.tolist(), rec, [1.6, 0.0, 99.0])
    assert new == {
        "90": [PIDState(pytest.approx(1.45), pytest.approx(0.9), 1), PIDState(pytest.approx(1.95), -0.1, 1)],
        "50": [PIDState(pytest.approx(0.25), 0.5, 1), PIDState(pytest.approx(0.35), -0.5, 1)],
    }
    assert state == cal.start()  # learn returns a new state
    assert state_from_json(json.loads(json.dumps(state_to_json(new)))) == new
    # without a volatility column a grouped calibration gives no adaptive interval at all
    rows, rec = adaptive(cal, state, values, None)
    assert rows == [None] * 3 and learn(cal, state, values.tolist(), rec, [5.0] * 3) == state


def test_router_and_variants_take_serves_autoscaling_config_checked_at_the_edge():
    from hpm_ray.config import load_spec
    from hpm_ray.errors import SpecError
    from hpm_ray.serving.app import ServeSpec

    auto = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4}
    spec = load_spec(ServeSpec, None, {"model": "m", "router_autoscaling": auto, "variant_replicas": 2})
    assert spec.scaling("router") == {"autoscaling_config": auto}
    assert spec.scaling("variant") == {"num_replicas": 2}
    with pytest.raises(SpecError, match="max_replics"):  # Serve itself would drop the typo silently
        load_spec(ServeSpec, None, {"model": "m", "router_autoscaling": {"max_replics": 3}})
    with pytest.raises(SpecError, match="max_replicas"):
        load_spec(ServeSpec, None, {"model": "m", "variant_autoscaling": {"min_replicas": 1, "max_replicas": 0}})
    with pytest.raises(SpecError, match="not both"):
        load_spec(ServeSpec, None, {"model": "m", "router_replicas": 2, "router_autoscaling": auto})


def test_records_are_what_to_dict_gives_natives_included():
    from hpm_ray.serving.schemas import records

    out = pd.DataFrame(
        {
            "prediction": np.array([1, 0, 2]),
            "proba_0": [0.2, np.nan, 0.1],
            "flag": [True, False, True],
            7: [1.5, 2.5, 3.5],  # a non-string column name stays as it is
        }
    )
    got, want = records(out), out.to_dict(orient="records")
    assert got[0] == want[0] and got[2] == want[2] and np.isnan(got[1]["proba_0"])
    assert [[type(v) for v in r.values()] for r in got] == [[type(v) for v in r.values()] for r in want]
    assert type(got[0]["prediction"]) is int and type(got[0]["flag"]) is bool  # JSON-ready, not numpy scalars
    assert records(out.iloc[:0]) == []
    # strings and nullable integers: pandas' own conversion (its missing values become None / NaN)
    other = pd.DataFrame({"label": ["a", None], "n": pd.array([1, None], dtype="Int64")})
    assert records(other)[1]["n"] is None and records(other)[0] == {"label": "a", "n": 1}


def test_router_metrics_are_counted_per_variant_off_the_event_loop():
    """The router records its Prometheus metrics from a batch of answers (a worker thread each round)."""
    from collections import Counter
    from types import SimpleNamespace

    from hpm_ray.serving.app import ABRouter

    class Metric:
        def __init__(self):
            self.calls = Counter()

        def inc(self, n, tags):
            self.calls[tags["variant"]] += n

        def observe(self, value, tags):
            self.calls[tags["variant"]] += 1

    me = SimpleNamespace(m_latency=Metric(), m_confidence=Metric(), m_requests=Metric(), m_errors=Metric())
    batch = [
        ("champion", True, 1.0, 0.8, True),
        ("champion", False, 2.0, None, True),
        ("challenger", True, 3.0, 0.6, True),
        ("champion", True, 4.0, 0.9, False),
    ]
    ABRouter.func_or_class._observe(me, batch)
    assert me.m_requests.calls == {"champion": 3, "challenger": 1}
    assert me.m_errors.calls == {"champion": 1}
    assert me.m_latency.calls == {"champion": 3, "challenger": 1}
    assert me.m_confidence.calls == {"champion": 2, "challenger": 1}  # an error has no confidence
