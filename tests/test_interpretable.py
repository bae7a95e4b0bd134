"""Interpretable presets: exports that reproduce the model, size limits, soft targets, augmentation budget, CLI."""

import itertools
import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from hpm_ray.config import validate_spec
from hpm_ray.distill.augment import munge
from hpm_ray.distill.export import (
    points_table,
    rules_text,
    score_rules,
    score_scorecard,
    scorecard,
    tree_rules,
    write_artifacts,
)
from hpm_ray.distill.interpretable import InterpretableSpec, gap_closed, t_interval
from hpm_ray.distill.presets import GBM20Student, ScorecardStudent, Tree4Student
from hpm_ray.distill.soft_targets import soft_targets
from hpm_ray.errors import SpecError


@pytest.fixture(scope="module")
def credit():
    """2,000 credit rows plus a categorical column, with missing values in a numeric and the categorical one."""
    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    X, y = X.iloc[:2000].reset_index(drop=True), y.iloc[:2000].to_numpy()
    rng = np.random.default_rng(0)
    X["region"] = pd.Categorical(rng.choice(["north", "south", "east"], len(X)))
    X.loc[rng.choice(len(X), 150, replace=False), "AGE"] = pd.NA
    X.loc[rng.choice(len(X), 100, replace=False), "region"] = np.nan
    return X, y


@pytest.fixture(scope="module")
def teacher(credit):
    import lightgbm as lgb
    from sklearn.model_selection import cross_val_predict

    X, y = credit
    return cross_val_predict(
        lgb.LGBMClassifier(n_estimators=80, verbose=-1, n_jobs=1), X, y, cv=3, method="predict_proba"
    )


@pytest.fixture(scope="module")
def new_rows(credit):
    """Rows to score: missing values, and a category the models never saw."""
    X = credit[0].iloc[:300].copy()
    X["region"] = X["region"].cat.add_categories(["west"])
    X.loc[:19, "region"] = "west"
    X.loc[20:39, "LIMIT_BAL"] = pd.NA
    return X


def test_scorecard_export_reproduces_predict_proba(credit, teacher, new_rows, tmp_path):
    X, y = credit
    model = ScorecardStudent(n_bins=6, C=0.5).fit(X, y, soft_targets=soft_targets(teacher, y, 2.0, 0.7))
    files = write_artifacts(model, tmp_path, "scorecard")
    card = json.loads((tmp_path / "scorecard.json").read_text())  # the exported file, not the in-memory dict
    assert card == json.loads(json.dumps(scorecard(model)))
    assert np.abs(score_scorecard(card, new_rows) - model.predict_proba(new_rows)).max() < 1e-9
    assert np.abs(score_scorecard(card, X) - model.predict_proba(X)).max() < 1e-9
    # the CSV a person reads carries the same points, bin by bin, base points first
    table = pd.read_csv(tmp_path / "scorecard.csv")
    assert sorted(p.name for p in files) == ["scorecard.csv", "scorecard.json"]
    assert table.feature.iloc[0] == "(base points)" and math.isclose(table.points.iloc[0], card["base_points"])
    assert np.allclose(table.points.iloc[1:], [b["points"] for f in card["features"] for b in f["bins"]], atol=1e-12)
    assert len(table) - 1 == model.size() and np.allclose(table.points, points_table(card).points, rtol=0, atol=1e-12)
    # a numeric feature's bins tile the line: each upper edge is the next bin's lower edge
    limit = [b for f in card["features"] if f["feature"] == "LIMIT_BAL" for b in f["bins"] if not b.get("missing")]
    assert limit[0]["lower"] is None and limit[-1]["upper"] is None
    assert all(a["upper"] == b["lower"] for a, b in itertools.pairwise(limit))
    # every 20 points double the odds
    assert math.isclose(card["factor"] * math.log(2.0), card["points_to_double_odds"])


@pytest.mark.parametrize("soft_mode", ["logit", "regression", "duplicate"])
def test_rules_reproduce_the_tree(soft_mode, credit, teacher, new_rows, tmp_path):
    X, y = credit
    model = Tree4Student(min_samples_leaf=30, soft_mode=soft_mode).fit(
        X, y, soft_targets=soft_targets(teacher, y, 1.0, 0.7)
    )
    write_artifacts(model, tmp_path, "tree4")
    rules = json.loads((tmp_path / "tree4_rules.json").read_text())
    assert len(rules) == model.size()
    for rows in (X, new_rows):
        assert np.abs(score_rules(rules, rows) - model.predict_proba(rows)).max() < 1e-12
    text = (tmp_path / "tree4_rules.txt").read_text().splitlines()
    assert len(text) == len(rules) and all(line.startswith("IF ") and " THEN P(1) = " in line for line in text)
    # a deeper split on the same side replaces the looser one: no feature appears twice with the same operator
    for r in rules:
        keys = [(c["feature"], c.get("op", "in")) for c in r["conditions"]]
        assert len(keys) == len(set(keys)) and len(keys) <= 4
    # leaves hold the mean target of their training rows, whatever scale the splits were grown on
    q = soft_targets(teacher, y, 1.0, 0.7)
    leaf = model.tree_model_.apply(model.encode(X))
    some = leaf[0]
    assert np.allclose(model.predict_proba(X.iloc[:1])[0], q[leaf == some].mean(axis=0))


def test_tree4_soft_modes(credit, teacher):
    """Squared error on probabilities = Gini on duplicated rows; log-odds differ on soft targets only."""
    X, y = credit
    q = soft_targets(teacher, y, 1.0, 1.0)
    fit = {
        m: Tree4Student(max_depth=3, min_samples_leaf=1, soft_mode=m).fit(X, y, soft_targets=q)
        for m in ("logit", "regression", "duplicate")
    }
    assert np.abs(fit["regression"].predict_proba(X) - fit["duplicate"].predict_proba(X)).max() < 1e-9
    assert rules_text(tree_rules(fit["regression"])) == rules_text(tree_rules(fit["duplicate"]))
    assert rules_text(tree_rules(fit["logit"])) != rules_text(tree_rules(fit["regression"]))
    # on hard labels the log-odds are affine in the label: the same tree as the ordinary one
    hard = {m: Tree4Student(max_depth=3, min_samples_leaf=5, soft_mode=m).fit(X, y) for m in ("logit", "regression")}
    assert rules_text(tree_rules(hard["logit"])) == rules_text(tree_rules(hard["regression"]))
    with pytest.raises(SpecError, match="soft_mode must be one of"):
        Tree4Student(soft_mode="gini").fit(X, y)


def test_presets_respect_their_size_limits(credit, teacher):
    import optuna

    X, y = credit
    q = soft_targets(teacher, y, 1.0, 0.8)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):  # whatever the tuner proposes stays inside the preset
        trial = study.ask()
        tree = Tree4Student(**Tree4Student.suggest(trial)).fit(X, y, soft_targets=q)
        gbm = GBM20Student(**GBM20Student.suggest(trial)).fit(X, y, soft_targets=q)
        assert tree.tree_model_.get_depth() <= 4 and tree.size() <= 16
        assert gbm.size() <= 20 and gbm.max_leaves() <= 8
    full = GBM20Student(min_child_samples=5).fit(X, y, soft_targets=q)
    assert full.size() == 20 and full.max_leaves() == 8
    with pytest.raises(SpecError, match="max_depth must be in"):
        Tree4Student(max_depth=5).fit(X, y)
    with pytest.raises(SpecError, match="n_estimators must be in"):
        GBM20Student(n_estimators=21).fit(X, y)
    with pytest.raises(SpecError, match="num_leaves must be in"):
        GBM20Student(num_leaves=9).fit(X, y)


@pytest.mark.parametrize("cls", [ScorecardStudent, Tree4Student, GBM20Student])
def test_soft_targets_change_the_preset(cls, credit, teacher):
    X, y = credit
    a = cls().fit(X, y, soft_targets=soft_targets(teacher, y, 1.0, 0.2)).predict_proba(X)[:, 1]
    b = cls().fit(X, y, soft_targets=soft_targets(teacher, y, 1.0, 1.0)).predict_proba(X)[:, 1]
    hard = cls().fit(X, y).predict_proba(X)[:, 1]
    assert np.mean(np.abs(a - b)) > 1e-3
    # more teacher in the target -> closer to the teacher than the hard-label twin
    assert np.mean(np.abs(b - teacher[:, 1])) < np.mean(np.abs(hard - teacher[:, 1]))


def test_augmentation_stops_at_its_time_budget(credit):
    X = credit[0]
    full = munge(X, 3000, seed=0, time_budget=1e9)
    assert len(full) == 3000  # unbounded: every requested row
    t = time.perf_counter()
    cut = munge(X, 10_000_000, seed=0, time_budget=0.5)  # far more rows than 0.5 s can make
    assert time.perf_counter() - t < 5.0
    assert len(cut) < 10_000_000 and len(cut) % 2000 == 0  # stopped between chunks
    assert list(cut.columns) == list(X.columns)


def test_augmented_rows_keep_codes_and_ranges(credit):
    X = credit[0]
    rows = munge(X, 4000, seed=1)
    for code in ("SEX", "EDUCATION", "PAY_0"):  # integer codes are copied from a neighbour, never perturbed
        assert set(rows[code].dropna()) <= set(X[code].dropna())
    for col in ("AGE", "LIMIT_BAL", "BILL_AMT1"):  # drawn values stay inside the training range
        assert rows[col].min() >= X[col].min() and rows[col].max() <= X[col].max()
    assert rows["LIMIT_BAL"].nunique() > X["LIMIT_BAL"].nunique()  # ...but numeric values are new, not copies
    assert set(rows["region"].dropna()) <= set(X["region"].dropna())


def test_gap_closed_and_t_interval_by_hand():
    assert gap_closed(0.76, 0.75, 0.78) == pytest.approx(1 / 3)
    assert gap_closed(0.74, 0.75, 0.78) == pytest.approx(-1 / 3)
    assert math.isnan(gap_closed(0.76, 0.78, 0.78))  # no gap to close
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])  # sd 1, n 3, t(0.975, 2) = 4.302653
    assert mean == 2.0 and hi - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6) and lo == pytest.approx(4 - hi)
    assert math.isnan(t_interval([0.5])[1])


def test_interpretable_spec_rejects_bad_values():
    with pytest.raises(SpecError, match="unknown student 'tree9'"):
        validate_spec(InterpretableSpec, {"presets": ["scorecard", "tree9"]})
    with pytest.raises(SpecError, match="alphas"):
        validate_spec(InterpretableSpec, {"alphas": [0.0, 0.5]})  # alpha 0 is the twin, not a distilled config


@pytest.mark.slow
def test_experiment_selects_on_validation_with_equal_budgets(ray_session):
    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.distill.interpretable import run_seed, summarise

    X, y = load_credit_default()
    spec = validate_spec(
        InterpretableSpec,
        {
            "presets": ["tree4", "scorecard"],
            "trials": 1,
            "temperatures": [1.0],
            "alphas": [0.5, 1.0],
            "teacher_trees": 20,
            "teacher_folds": 2,
            "teacher_tune_trials": 4,
            "augment_seconds": 5.0,
            "max_rows": 1500,
        },
    )
    res = run_seed(X, y, spec, seed=0)
    assert res["n_augmented"] > 0
    for o in res["outcomes"]:
        # the student is the validation-best over techniques; the twin had as many fits
        assert o.student["val_score"] == max(r["val_score"] for r in o.techniques.values())
        assert set(o.techniques) == {"soft", "augment", "chain"}
        assert 0.5 < o.student["test_auc"] < 1.0 and 0.5 < o.twin["test_auc"] < 1.0
    # students: 3 techniques x 2 configs x 2 presets x 1 trial; the twins as many; one assistant per chain
    assert res["n_fits"] == 12 + 12 + 4
    table = summarise([res])
    assert list(table.preset) == ["tree4", "scorecard"] and table.diff_mean.notna().all()
    # ECE of the served (calibrated) models beside the AUCs
    assert table[["teacher_ece", "student_ece", "twin_ece"]].notna().all().all()
    assert all(0.0 <= o.student["test_ece"] < 0.2 and 0.0 <= o.twin["test_ece"] < 0.2 for o in res["outcomes"])


@pytest.mark.slow
def test_cli_students_presets_write_exports(ray_session, mlflow_uri, tmp_path, capsys):
    import mlflow

    from hpm_ray.cli import main

    spec = tmp_path / "distill.yaml"
    spec.write_text(
        "teacher_trees: 20\nteacher_folds: 2\nteacher_tune_trials: 4\nhpm_trials: 2\ntemperatures: [1.0, 2.0]\n"
        "alphas: [0.5, 1.0]\nadaptive_temperature: false\nchain: false\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "distill",
            "--students",
            "scorecard,tree4,gbm20",
            "--max-rows",
            "1500",
            "--method",
            "hpm",
            "--spec",
            str(spec),
            "--out",
            str(out),
            "--register-name",
            "interp-cli-test",
        ]
    )
    assert code == 0, capsys.readouterr().err
    for name in ("scorecard.csv", "scorecard.json", "tree4_rules.json", "tree4_rules.txt"):
        assert (out / "exports" / name).is_file()
    results = pd.read_csv(out / "results.csv")
    assert set(results.student) == {"scorecard", "tree4", "gbm20"}
    card = json.loads((out / "exports" / "scorecard.json").read_text())
    from hpm_ray.data.datasets import load_credit_default

    p = score_scorecard(card, load_credit_default()[0].head(50))
    assert p.shape == (50, 2) and np.all((p > 0) & (p < 1))
    html = (out / "report.html").read_text()
    assert "Preset scorecard" in html and "Points table" in html and "Rules (one per leaf" in html
    assert "Preset gbm20" in html
    run = mlflow.search_runs(
        experiment_names=["hpm-ray-distill"],
        filter_string="attributes.run_name = 'distill-hpm'",
        order_by=["start_time DESC"],
        max_results=1,
    )  # the parent run, not a config's child
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(run.run_id.iloc[0], "exports")]
    assert "exports/scorecard.csv" in logged and "exports/tree4_rules.json" in logged


def test_cli_bad_preset_name_exits_2_with_one_line(capsys):
    from hpm_ray.cli import main

    assert main(["distill", "--students", "scorecard,tree5", "--no-mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--students: unknown student 'tree5'" in err and "tree4" in err
