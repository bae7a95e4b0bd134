"""Distillation on the session's Ray: object-store sharing, failure isolation, OOF teachers, warm start, CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from hpm_ray.distill.catalog import STUDENTS, register_student
from hpm_ray.distill.students import SoftStudent

SMALL = dict(max_rows=1500, teacher_trees=40, teacher_folds=3, teacher_tune_trials=4, progress=False)


@pytest.fixture(scope="module")
def credit():
    from hpm_ray.data.datasets import load_credit_default

    return load_credit_default()


@pytest.fixture(scope="module")
def fitted_teacher(credit):
    import lightgbm as lgb

    X, y = credit
    return lgb.LGBMClassifier(n_estimators=60, verbose=-1, n_jobs=1).fit(X.iloc[-3000:], y.iloc[-3000:])


class Exploding(SoftStudent):
    """A plug-in student whose fit always raises."""

    name = "exploding"

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    @staticmethod
    def suggest(trial):
        return {}

    def _fit_soft(self, X, q):
        raise RuntimeError("boom in fit")

    def _proba(self, X):
        raise AssertionError("never fitted")

    def size(self) -> int:
        return 0


@pytest.fixture
def exploding_student():
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    register_student(Exploding)
    yield
    STUDENTS.pop("exploding", None)


@pytest.mark.slow
def test_teacher_probabilities_are_put_once_and_read_zero_copy(ray_session, credit, fitted_teacher, monkeypatch):
    """Done-when 2: one ray.put for the run; every task gets the ObjectRef and reads read-only shared memory."""
    import ray

    from hpm_ray.distill.auto import AutoDistiller

    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(type(value)) or real_put(value, **kw))
    X, y = credit
    d = AutoDistiller(
        X,
        y,
        teachers=[fitted_teacher],
        method="legacy",
        students=["lgbm", "tree"],
        temperatures=[1.0, 2.0],
        alphas=[0.5],
        legacy_trials=1,
        augment=True,
        augment_fraction=0.2,
        **SMALL,
    )
    df = d.run()
    assert puts == [dict]  # the payload (with the teacher-labelled synthetic rows), once
    assert d.n_augmented == int(0.2 * len(d.splits.y_train))
    ok = [r for r in d.records if r["status"] == "ok"]
    assert len(ok) == 8  # 4 configs + 2 hard-label twin studies per type (as many as its configs)
    assert all(r["payload_zero_copy"] for r in ok)
    # soft configs differ from each other: T changes the lgbm student
    lg = df[(df.student == "lgbm") & (df.stage == "full")]
    assert lg.auc.nunique() == 2 or lg.val_score.nunique() == 2
    # fair twin: one hard-label study per soft config, and the one best on validation KS is the twin
    tw = df[(df.stage == "twin") & (df.student == "lgbm")]
    assert len(tw) == 2 and tw.key.nunique() == 2
    assert (lg.twin_auc == tw.loc[tw.val_score.idxmax()].auc).all()


def test_failing_config_does_not_abort_the_run(ray_session, credit, fitted_teacher, exploding_student):
    """Done-when 6: configs that raise are recorded as failed; the others finish and the best is chosen."""
    from hpm_ray.distill.auto import AutoDistiller
    from hpm_ray.distill.engine import ConfigTask, TaskQueue, put_payload, run_tasks

    X, y = credit
    d = AutoDistiller(
        X,
        y,
        teachers=[fitted_teacher],
        method="legacy",
        students=["exploding", "tree"],
        temperatures=[1.0],
        alphas=[0.5, 0.9],
        legacy_trials=1,
        **SMALL,
    )
    df = d.run()
    failed = df[df.status == "failed"]
    assert set(failed.student) == {"exploding"} and len(failed) == 4  # 2 configs + its 2 twin studies
    assert failed.error.str.contains("boom in fit").all()
    assert (df[df.student == "tree"].status == "ok").all()
    assert d.summary()["best"]["student"] == "tree"
    # a bad hyperparameter value inside a worker is isolated the same way
    sp = d.splits
    ref = put_payload(sp.X_train, sp.y_train, sp.X_val, sp.y_val, d.teacher_train, d.teacher_val)
    recs = run_tasks(
        ref,
        [
            ConfigTask("bad", "lgbm", 1.0, 0.5, fixed_params={"num_leaves": -3}),
            ConfigTask("good", "lgbm", 1.0, 0.5, fixed_params={"n_estimators": 10}),
        ],
    )
    status = {r["key"]: r["status"] for r in recs}
    assert status == {"bad": "failed", "good": "ok"}
    # several cheap configs in one Ray task: each fails alone; a held task runs once a CPU is free
    queue = TaskQueue(ref)
    batch = [
        ConfigTask("bad2", "lgbm", 1.0, 0.5, fixed_params={"num_leaves": -3}, keep_model=False),
        ConfigTask("good2", "lgbm", 1.0, 0.5, fixed_params={}, budget=0.3, keep_model=False),
    ]
    held = [ConfigTask("held", "tree", 1.0, 0.5, fixed_params={"max_depth": 2})]
    queue.hold(held)
    queue.submit(batch, batch=2)
    got = {r["key"]: r for r in queue.results(batch)}
    assert {k: r["status"] for k, r in got.items()} == {"bad2": "failed", "good2": "ok"}
    good = got["good2"]
    assert good["model"] is None and good["val_proba"].shape == (len(sp.y_val), 2) and good["payload_zero_copy"]
    assert good["params"] == {"n_estimators": 30}  # the screening budget: 30 % of the rows and of the rounds
    assert [r["key"] for r in queue.results(held)] == ["held"]


def test_default_teachers_are_out_of_fold_and_cached(ray_session, credit):
    from hpm_ray.distill.splits import make_splits
    from hpm_ray.distill.teachers import DEFAULT_TEACHERS, TUNED, train_default_teachers
    from hpm_ray.metrics import roc_auc

    X, y = credit
    sp = make_splits(X, y, 0.2, 0.2, seed=3, max_rows=1200)
    ts = train_default_teachers(sp, n_trees=40, folds=3, seed=3, tune_trials=2)
    assert not ts.from_cache and ts.out_of_fold and ts.names == [*DEFAULT_TEACHERS, TUNED]
    for oof, model in zip(ts.train[:3], ts.models[:3]):
        # a teacher scored on rows it was fitted on looks far better than its out-of-fold probabilities
        assert roc_auc(sp.y_train, model.predict_proba(sp.X_train)) > roc_auc(sp.y_train, oof) + 0.05
        np.testing.assert_allclose(oof.sum(axis=1), 1.0)
    # the tuned member is cross-fitted with the rounds its validation search stopped at
    assert ts.tuned.trials == 2 and ts.models[3].n_estimators == ts.tuned.params["n_estimators"]
    assert not np.allclose(ts.train[3], ts.models[3].predict_proba(sp.X_train))
    again = train_default_teachers(sp, n_trees=40, folds=3, seed=3, tune_trials=2)
    assert again.from_cache
    np.testing.assert_array_equal(again.train[3], ts.train[3])


@pytest.mark.slow
def test_hpm_shared_memory_warm_starts_the_second_run(ray_session, credit, tmp_path):
    """Done-when 5 (behaviour): run 2 enqueues run 1's best parameters, so its first trial already scores them."""
    from hpm_ray.distill.auto import AutoDistiller

    X, y = credit
    kw = dict(
        method="hpm",
        students=["lgbm", "logreg"],
        alphas=[0.5, 0.9],
        max_configs=3,
        hpm_trials=2,
        memory_path=tmp_path / "memory.journal",
        **SMALL,
    )
    first = AutoDistiller(X, y, **kw)
    df1 = first.run()
    stages = set(df1.stage)
    assert {"probe", "screen", "full", "twin"} <= stages
    assert (df1.stage == "full").sum() <= 3  # at most max_configs carried to full budget
    for st in ("lgbm", "logreg"):  # a twin study per config of the type that reached the full budget
        n_full = ((df1.stage == "full") & (df1.student == st)).sum()
        assert ((df1.stage == "twin") & (df1.student == st)).sum() == max(1, n_full)
    full1 = {
        (r["task"].student, r["task"].temperature, r["task"].alpha): r
        for r in first.records
        if r["task"].stage == "full" and r["status"] == "ok"
    }
    import optuna

    from hpm_ray.distill.memory import OptimizationMemory

    stored = optuna.get_all_study_names(OptimizationMemory(tmp_path / "memory.journal").storage)
    assert {k.split("|")[0] for k in stored} == {st for st, _, _ in full1} | {"lgbm+hard", "logreg+hard"}
    second = AutoDistiller(X, y, **kw)
    second.run()
    best1 = {}  # each student's best config of run 1 (selection by validation KS)
    for (st, _, _), r in full1.items():
        if st not in best1 or r["val_score"] > best1[st]["val_score"]:
            best1[st] = r
    for r in second.records:
        t = r["task"]
        if t.stage != "full" or t.student not in best1:
            continue
        before = full1.get((t.student, t.temperature, t.alpha))
        if before:  # the same config starts from its own best and scores it again in its first trial
            assert t.warm_params[0] == before["params"]
            assert r["history"][0] == pytest.approx(before["val_score"])
        else:  # a config run 1 did not tune starts from the student's best elsewhere
            assert t.warm_params[0] == best1[t.student]["params"]


@pytest.mark.slow
def test_cli_distill_writes_outputs_and_registers(ray_session, mlflow_uri, tmp_path, capsys):
    import mlflow

    from hpm_ray.cli import main

    spec = tmp_path / "d.yaml"
    spec.write_text(
        "students: [lgbm, tree]\nalphas: [0.5, 0.9]\nhpm_trials: 2\nteacher_trees: 40\n"
        "teacher_folds: 3\nmin_improvement: 0.0\nteacher_tune_trials: 0\n"
    )
    out = tmp_path / "out"
    rc = main(
        [
            "distill",
            "--method",
            "hpm",
            "--spec",
            str(spec),
            "--max-rows",
            "1500",
            "--max-configs",
            "3",
            "--out",
            str(out),
            "--seed",
            "1",
            "--register-name",
            "distill-test",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {
        "method",
        "wall_time_s",
        "n_fits",
        "n_configs_evaluated",
        "teacher",
        "best",
        "hard_label_twin",
    }
    assert {
        "student",
        "temperature",
        "alpha",
        "params",
        "auc",
        "accuracy",
        "log_loss",
        "ks",
        "fidelity",
        "predict_ms_per_1k",
        "model_uri",
    } <= set(summary["best"])
    results = pd.read_csv(out / "results.csv")
    assert summary["n_fits"] == results.n_fits.sum()
    assert results[results.stage == "chain"].shape[0] >= 1
    html = (out / "report.html").read_text()
    assert "hard-label twin" in html and "Progressive chain" in html and "<svg" in html
    model = mlflow.pyfunc.load_model(summary["best"]["model_uri"])
    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    pred = model.predict(X.head(5))
    assert list(pred.columns) == ["prediction", "proba_0", "proba_1"]
    assert "registered models:/distill-test/" in capsys.readouterr().out
    # the drift reference is the held-out test block (and the model's outputs on it), not training rows
    from hpm_ray.distill.spec import DistillSpec
    from hpm_ray.distill.splits import make_splits
    from hpm_ray.registry.reference import load_reference

    d = DistillSpec()
    sp = make_splits(X, y, d.validation_size, d.test_size, 1, 1500)
    ref = load_reference("distill-test", summary["best"]["model_uri"].rsplit("/", 1)[1])
    pd.testing.assert_frame_equal(ref.features, sp.X_test.reset_index(drop=True), check_dtype=False)
    assert np.allclose(ref.outputs["proba_1"], model.predict(sp.X_test)["proba_1"])


def test_cli_bad_input_exits_2(ray_session, tmp_path, capsys):
    from hpm_ray.cli import main

    data = tmp_path / "d.csv"
    pd.DataFrame({"a": range(50), "t": [1] * 50}).to_csv(data, index=False)
    assert main(["distill", "--data", str(data), "--target", "t", "--no-mlflow"]) == 2
    assert "constant" in capsys.readouterr().err
    assert main(["distill", "--data", str(data), "--target", "nope", "--no-mlflow"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["distill", "--data", str(data), "--no-mlflow"]) == 2
    assert "--target" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("temperatures: [1.0, -2]\n")
    assert main(["distill", "--spec", str(bad), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "temperature must be > 0" in err and len(err.strip().splitlines()) == 1


def test_multiclass_run_selects_by_log_loss(ray_session):
    from hpm_ray.distill.auto import AutoDistiller

    rng = np.random.default_rng(0)
    n = 900
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": pd.Categorical(rng.choice(["u", "v"], n))})
    y = np.where(X.a + 0.5 * rng.normal(size=n) > 0.4, "high", np.where(X.b > 0, "mid", "low"))
    d = AutoDistiller(
        X,
        y,
        method="legacy",
        students=["lgbm", "logreg"],
        temperatures=[2.0],
        alphas=[0.7],
        legacy_trials=1,
        teacher_trees=30,
        teacher_folds=3,
        teacher_tune_trials=0,
        progress=False,
    )
    df = d.run()
    assert d.metric == "log_loss" and (df.status == "ok").all()
    s = d.summary()
    assert s["best"]["ks"] is None and s["teacher"]["auc"] > 0.7
    json.dumps(s, allow_nan=False)
    assert set(d.predict(X.head(20))) <= {"high", "mid", "low"}
    assert d.predict_proba(X.head(20)).shape == (20, 3)
