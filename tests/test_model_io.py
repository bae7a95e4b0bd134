"""Registered models work wherever MLflow models work: raw CSV frames in a fresh process, `mlflow models serve`,
signatures and input examples, and the A/B app, for a student trained on string, integer and missing values
and for a quantile forecaster.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from hpm_ray.data.datasets import load_btc_hourly
from hpm_ray.data.features import make_supervised
from hpm_ray.data.io import prepare_tabular
from hpm_ray.hpo.conformal import ConformalQuantiles
from hpm_ray.hpo.lgbm import LightGBMQuantiles
from hpm_ray.hpo.pyfunc import QuantileForecaster
from hpm_ray.hpo.trainable import target_scale
from hpm_ray.registry.models import log_and_register

pytestmark = pytest.mark.slow
# A new town, a gap in the integer column (pd.read_csv then reads it as float), a gap in the string column.
NEW_ROWS = (
    "city,plan,age,income,mobile,customer_id\nQuito,basic,,3.5,True,1\nOslo,gold,30,,False,2\n"
    ",basic,64,51.0,True,3\nLima,gold,45,48.2,False,4\n"
)


def people(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.choice(["Oslo", "Lima", "Pune", "Accra"], n).astype(object)
    city[rng.random(n) < 0.05] = None
    df = pd.DataFrame(
        {
            "city": city,
            "plan": rng.choice(["basic", "gold"], n),
            "age": rng.integers(18, 80, n),
            "income": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 10, n).round(1)),
            "mobile": rng.random(n) < 0.5,
        }
    )
    logit = (
        (df.age - 50) / 15
        + 1.2 * (df.city == "Oslo")
        - 0.8 * (df.plan == "gold")
        + 0.5 * df.mobile
        + rng.normal(0, 0.7, n)
    )
    df["y"] = (logit > 0).astype(int)
    return df


@pytest.fixture(scope="module")
def student(ray_session, mlflow_uri, tmp_path_factory):
    """`hpm-ray distill --data people.csv --target y`, as a new user runs it; returns paths and the model URI."""
    from hpm_ray.cli import main

    d = tmp_path_factory.mktemp("people")
    people(900, 0).to_csv(d / "people.csv", index=False)
    (d / "new.csv").write_text(NEW_ROWS)
    (d / "spec.yaml").write_text(
        "students: [lgbm, logreg]\ntemperatures: [1.0, 2.0]\nalphas: [0.5]\nhpm_trials: 1\n"
        "teacher_trees: 30\nteacher_folds: 3\nchain: false\nteacher_tune_trials: 0\n"
    )
    rc = main(
        [
            "distill",
            "--data",
            str(d / "people.csv"),
            "--target",
            "y",
            "--spec",
            str(d / "spec.yaml"),
            "--max-configs",
            "2",
            "--out",
            str(d / "out"),
            "--register-name",
            "people-student",
        ]
    )
    assert rc == 0
    uri = json.loads((d / "out" / "summary.json").read_text())["best"]["model_uri"]
    return {"dir": d, "uri": uri, "tracking": mlflow_uri}


@pytest.fixture(scope="module")
def forecaster(mlflow_uri):
    """A real quantile forecaster (LightGBM per quantile + CQR) on BTC feature rows, registered like the HPO does."""
    X, y = make_supervised(load_btc_hourly(), horizon=24)
    X, y = X.iloc[-2600:], y.iloc[-2600:].to_numpy()
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
    scale = target_scale(X["rv_168"].to_numpy(), 24, 0.01)  # boosters learn volatility-standardised returns
    boosters = [
        lgb.train(
            {"objective": "quantile", "alpha": q, "verbose": -1, "num_threads": 1},
            lgb.Dataset(X.iloc[:2000], y[:2000] / scale[:2000]),
            num_boost_round=20,
        )
        for q in quantiles
    ]
    q_cal = np.column_stack([b.predict(X.iloc[2000:2500].to_numpy(dtype=np.float32)) for b in boosters])
    cq = ConformalQuantiles(quantiles).fit(q_cal * scale[2000:2500, None], y[2000:2500])
    model = QuantileForecaster(LightGBMQuantiles(boosters), cq, X.iloc[:2000], 24, scale_by="rv_168", scale_fill=0.01)
    with mlflow.start_run():
        mv = log_and_register(
            model, "io-forecaster-h24", "quantile_forecaster", {"test_pinball": 0.01}, input_example=X.iloc[2500:2505]
        )
    return {"uri": f"models:/{mv.name}/{mv.version}", "rows": X.iloc[-4:], "tracking": mlflow_uri}


def test_raw_csv_rows_predict_in_a_fresh_process_as_in_process(student):
    """Fresh process, standard MLflow call on `pd.read_csv` rows == the estimator on the training-form rows."""
    d = student["dir"]
    # The same rows with whole-number incomes and no gap: pd.read_csv reads that column as int64, not float.
    pd.read_csv(d / "new.csv").assign(income=[3, 40, 51, 48]).to_csv(d / "whole.csv", index=False)
    code = (
        "import json, sys, mlflow, pandas as pd; m = mlflow.pyfunc.load_model(sys.argv[1]); "
        "print(json.dumps([m.predict(pd.read_csv(f))['proba_1'].tolist() for f in sys.argv[2:]]))"
    )
    env = dict(os.environ, MLFLOW_TRACKING_URI=student["tracking"])
    done = subprocess.run(
        [sys.executable, "-c", code, student["uri"], str(d / "new.csv"), str(d / "whole.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fresh, whole = map(np.array, json.loads(done.stdout.strip().splitlines()[-1]))
    # In-process, by hand: the training frame's categories (an unseen town -> missing), numbers as numbers.
    train = prepare_tabular(pd.read_csv(d / "people.csv"), "y").X
    new = pd.read_csv(d / "new.csv")
    assert new["age"].dtype == float and new["city"].isna().sum() == 1
    hand = pd.DataFrame(
        {
            c: pd.Categorical(new[c], categories=train[c].cat.categories)
            if isinstance(train[c].dtype, pd.CategoricalDtype)
            else new[c].astype(float)
            for c in train.columns
        }
    )
    assert hand["city"].isna().tolist() == [True, False, True, False]  # Quito is unseen
    estimator = mlflow.pyfunc.load_model(student["uri"]).unwrap_python_model().estimator
    np.testing.assert_allclose(fresh, estimator.predict_proba(hand)[:, 1], rtol=0, atol=1e-9)
    hand["income"] = [3.0, 40.0, 51.0, 48.0]
    np.testing.assert_allclose(whole, estimator.predict_proba(hand)[:, 1], rtol=0, atol=1e-9)
    assert len(set(np.round(fresh, 6))) == 4  # four different answers: the rows really reached the model


def _serve(uri: str, tracking: str, log: Path, port: int):
    # `mlflow models serve` runs `uvicorn` from PATH: the environment's own bin folder, as an activated venv has.
    env = dict(
        os.environ, MLFLOW_TRACKING_URI=tracking, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait(proc, url: str, log: Path, limit_s: float = 240) -> None:
    deadline = time.time() + limit_s
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"scoring server did not start in {limit_s} s: {log.read_text()[-2000:]}")


def _payloads(frame: pd.DataFrame) -> list[dict]:
    """`dataframe_split` and `dataframe_records` bodies as a client writes them from a frame (NaN -> null)."""
    return [
        {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))},
        {"dataframe_records": json.loads(frame.to_json(orient="records"))},
    ]


def test_mlflow_scoring_server_answers_raw_rows_like_in_process(student, forecaster, tmp_path, port_source):
    raw = pd.read_csv(student["dir"] / "new.csv")
    servers = {
        name: _serve(m["uri"], m["tracking"], tmp_path / f"{name}.log", port_source())
        for name, m in (("student", student), ("forecaster", forecaster))
    }
    try:
        for name, (proc, url) in servers.items():
            _wait(proc, url, tmp_path / f"{name}.log")
        for name, frame in (("student", raw), ("forecaster", forecaster["rows"])):
            expected = mlflow.pyfunc.load_model((student if name == "student" else forecaster)["uri"]).predict(frame)
            for body in _payloads(frame):
                r = requests.post(servers[name][1] + "/invocations", json=body, timeout=60)
                assert r.status_code == 200, r.text[:500]
                got = pd.DataFrame(r.json()["predictions"])
                assert list(got.columns) == list(expected.columns)
                np.testing.assert_allclose(got.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=0, atol=1e-9)
        url = servers["student"][1]
        lacking = requests.post(url + "/invocations", json=_payloads(raw.drop(columns="age"))[1], timeout=60)
        assert lacking.status_code == 400 and "'age'" in lacking.json()["message"]
        wrong = requests.post(
            url + "/invocations",
            json={"dataframe_records": [{"city": "Oslo", "plan": "gold", "age": "old", "income": 1.0, "mobile": True}]},
            timeout=60,
        )
        assert wrong.status_code == 400 and "column 'age' must hold numbers" in wrong.json()["message"]
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)


def test_every_kind_has_a_signature_and_an_input_example_that_validates(student, forecaster):
    from mlflow.models import validate_serving_input

    for m, kind_inputs in (
        (student, {"city": "string", "plan": "string", "age": "Any", "income": "Any", "mobile": "Any"}),
        (forecaster, None),
    ):
        info = mlflow.models.get_model_info(m["uri"])
        assert info.signature is not None and info.saved_input_example_info is not None
        inputs = {c.name: str(getattr(c.type, "name", c.type)) for c in info.signature.inputs.inputs}
        if kind_inputs:
            assert inputs == kind_inputs
            assert info.signature.inputs.optional_input_names() == ["city", "income"]  # training had gaps there
        else:
            assert set(inputs.values()) == {"Any"} and "rv_168" in inputs
        local = Path(mlflow.artifacts.download_artifacts(m["uri"]))
        serving = json.loads((local / info.saved_input_example_info["serving_input_path"]).read_text())
        out = pd.DataFrame(validate_serving_input(m["uri"], serving))
        assert list(out.columns) == info.signature.outputs.input_names()


def test_ab_app_serves_a_student_trained_on_string_columns(student, serve_port):
    from hpm_ray.serving import start_ab, stop

    name, version = student["uri"].split("/")[-2:]
    url = start_ab(name, version, port=serve_port, token="t-io", app_name="ab-io", resume=False)
    try:
        raw = pd.read_csv(student["dir"] / "new.csv")
        body = {"dataframe_records": json.loads(raw.to_json(orient="records"))}
        r = requests.post(url + "/predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        answer = r.json()
        expected = mlflow.pyfunc.load_model(student["uri"]).predict(raw)
        np.testing.assert_allclose(
            [p["proba_1"] for p in answer["predictions"]], expected["proba_1"], rtol=0, atol=1e-9
        )
        assert answer["ignored_columns"] == ["customer_id"] and answer["unseen_categories"] == {"city": 1}
        bad = requests.post(
            url + "/predict", json={"dataframe_records": [{"city": "Oslo", "age": 3, "income": 1.0}]}, timeout=60
        )
        assert bad.status_code == 422 and "plan" in bad.json()["error"]
    finally:
        stop("ab-io")
