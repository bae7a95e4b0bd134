"""Distillation pieces without Ray: students on soft targets, memory, selection, splits, spec errors."""

import numpy as np
import pandas as pd
import pytest

from hpm_ray.distill.catalog import STUDENTS, make_student
from hpm_ray.distill.memory import OptimizationMemory, fingerprint, nearest_fingerprint
from hpm_ray.distill.selection import config_grid, promote, trials_to_reach
from hpm_ray.distill.soft_targets import soft_targets
from hpm_ray.distill.splits import encode_target, make_splits
from hpm_ray.errors import DataError, SpecError
from hpm_ray.metrics import kl_divergence


@pytest.fixture(scope="module")
def credit_small():
    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    return X.iloc[:2000].reset_index(drop=True), y.iloc[:2000].to_numpy()


@pytest.fixture(scope="module")
def credit_teacher(credit_small):
    """Out-of-fold probabilities of a large LightGBM, as hpm-ray's own teachers produce them."""
    import lightgbm as lgb
    from sklearn.model_selection import cross_val_predict

    X, y = credit_small
    teacher = lgb.LGBMClassifier(n_estimators=200, num_leaves=31, verbose=-1, n_jobs=1)
    return cross_val_predict(teacher, X, y, cv=5, method="predict_proba")


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_soft_student_matches_teacher_better_than_hard_twin(name, credit_small, credit_teacher):
    """Done-when 1: on training rows, training on the teacher's soft labels brings a student closer to it."""
    X, y = credit_small
    soft = make_student(name).fit(X, y, soft_targets=soft_targets(credit_teacher, y, 1.0, 1.0))
    hard = make_student(name).fit(X, y)  # same type and hyperparameters, one-hot labels
    kl_soft = kl_divergence(credit_teacher, soft.predict_proba(X))
    kl_hard = kl_divergence(credit_teacher, hard.predict_proba(X))
    assert kl_soft < kl_hard


@pytest.mark.parametrize("name", ["lgbm", "tree", "xgb"])
def test_temperature_and_alpha_change_the_student(name, credit_small, credit_teacher):
    """Done-when 1: two (T, alpha) give different students (the public version's ignored them)."""
    X, y = credit_small
    a = make_student(name).fit(X, y, soft_targets=soft_targets(credit_teacher, y, 0.5, 0.3)).predict_proba(X)
    b = make_student(name).fit(X, y, soft_targets=soft_targets(credit_teacher, y, 3.0, 0.9)).predict_proba(X)
    assert np.mean(np.abs(a - b)) > 0.01
    # a higher temperature with a larger teacher share gives flatter probabilities
    assert b[:, 1].std() < a[:, 1].std()


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_multiclass_students_with_categoricals_and_missing(name):
    rng = np.random.default_rng(0)
    n = 600
    X = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": pd.Categorical(rng.choice(["u", "v", "w"], n))}
    )
    y = (X.a > 0.5).astype(int) + (X.c == "w").astype(int) * 1 + 0
    y = np.clip(y, 0, 2).to_numpy()
    X.loc[rng.choice(n, 40, replace=False), "b"] = np.nan
    teacher = np.eye(3)[y] * 0.7 + 0.1
    s = make_student(name).fit(X, y, soft_targets=soft_targets(teacher, y, 2.0, 0.7))
    p = s.predict_proba(X)
    assert p.shape == (n, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert np.mean(s.predict(X) == y) > 0.6
    assert s.size() > 0 and s.get_params()["random_state"] == 0


@pytest.mark.parametrize("name", ["tree", "tree4"])
def test_soft_tree_leaves_count_real_rows_like_the_twins(name, credit_small, credit_teacher):
    """Weighted duplication made min_samples_leaf count copies: soft leaves held half the twin's real rows."""
    X, y = credit_small
    kw = {"soft_mode": "duplicate"} if name == "tree4" else {"max_depth": 8}
    q = soft_targets(credit_teacher, y, 2.0, 0.7)
    soft = make_student(name, {"min_samples_leaf": 60, **kw}).fit(X, y, soft_targets=q)
    hard = make_student(name, {"min_samples_leaf": 60, **kw}).fit(X, y)

    def rows_per_leaf(m):
        leaf = m.tree_model_.apply(m.encode(X)) if name == "tree4" else m.model_[-1].apply(m.model_[0].transform(X))
        return np.bincount(leaf)[np.unique(leaf)]

    assert rows_per_leaf(soft).min() >= 60 and rows_per_leaf(hard).min() >= 60
    assert len(rows_per_leaf(soft)) <= len(X) // 60


def test_unknown_student():
    with pytest.raises(SpecError, match="unknown student 'svm'"):
        make_student("svm")


def test_memory_round_trip_and_fingerprint(tmp_path, credit_small):
    X, _ = credit_small
    fp = fingerprint(X, 2)
    assert fingerprint(X.iloc[:1500], 2) == fp  # same schema, same order of magnitude of rows
    assert fingerprint(X.iloc[:200], 2) != fp and fingerprint(X.drop(columns=["AGE"]), 2) != fp
    mem = OptimizationMemory(tmp_path / "m.journal", keep=2)
    mem.record("lgbm", fp, "ks", 2.0, 0.7, {"n_estimators": 50}, 0.40)
    mem.record("lgbm", fp, "ks", 2.0, 0.7, {"n_estimators": 80}, 0.45)
    mem.record("lgbm", fp, "ks", 2.0, 0.7, {"n_estimators": 20}, 0.30)
    again = OptimizationMemory(tmp_path / "m.journal")  # another process's view of the same file
    assert again.best_params("lgbm", fp, "ks", 2.0, 0.7)[:2] == [{"n_estimators": 80}, {"n_estimators": 50}]
    assert again.best_params("xgb", fp, "ks", 2.0, 0.7) == []
    assert again.best_params("lgbm", fp, "log_loss", 2.0, 0.7) == []  # scores of another metric never mix


def test_nearest_fingerprint_same_schema_closest_size():
    stored = ["aaa-r10", "aaa-r13", "aaa-r16", "bbb-r12", "legacyhash"]
    assert nearest_fingerprint("aaa-r13", stored) == "aaa-r13"  # a hit is itself
    assert nearest_fingerprint("aaa-r12", stored) == "aaa-r13"  # closest row step of the same schema
    assert nearest_fingerprint("aaa-r15", stored) == "aaa-r16"
    assert nearest_fingerprint("aaa-r14", ["aaa-r13", "aaa-r15"]) == "aaa-r15"  # a tie: the larger data
    assert nearest_fingerprint("aaa-r19", stored) is None  # 3 powers of two away: not similar data
    assert nearest_fingerprint("ccc-r12", stored) is None  # another schema never matches
    assert nearest_fingerprint("legacyhash", stored) == "legacyhash" and nearest_fingerprint("other", stored) is None


def test_memory_warm_starts_from_the_nearest_size_without_reusing_other_schemas(tmp_path, credit_small):
    X, _ = credit_small
    small, large = fingerprint(X.iloc[:600], 2), fingerprint(X.iloc[:2400], 2)
    assert small != large  # 600 and 2,400 rows: two powers of two apart, a miss on the exact fingerprint
    mem = OptimizationMemory(tmp_path / "m.journal")
    mem.record("lgbm", small, "ks", 2.0, 0.7, {"n_estimators": 50}, 0.40)
    mem.record("lgbm", fingerprint(X.drop(columns=["AGE"]).iloc[:2400], 2), "ks", 2.0, 0.7, {"n_estimators": 9}, 0.9)
    assert mem.best_params("lgbm", large, "ks", 2.0, 0.7) == [{"n_estimators": 50}]
    assert mem.best_params("lgbm", large, "ks", 3.0, 0.5) == [{"n_estimators": 50}]  # another config's best
    assert mem.best_params("xgb", large, "ks", 2.0, 0.7) == []


def test_memory_keeps_each_configs_best_score(tmp_path):
    """A parameter set keeps its best score per (student, T, alpha): a later, worse score elsewhere or of
    the same config does not demote it (the JSON memory kept whichever config was recorded last)."""
    mem = OptimizationMemory(tmp_path / "m.journal", keep=3)
    a, b = {"C": 1.0}, {"C": 0.1}
    mem.record("logreg", "fp", "ks", 1.0, 0.5, a, 0.40)
    mem.record("logreg", "fp", "ks", 1.0, 0.5, b, 0.35)
    mem.record("logreg", "fp", "ks", 3.0, 0.9, a, 0.10)  # another config: its own entry
    mem.record("logreg", "fp", "ks", 1.0, 0.5, a, 0.20)  # a worse re-run of the same config
    assert mem.best_params("logreg", "fp", "ks", 1.0, 0.5) == [a, b]
    assert mem.best_params("logreg", "fp", "ks", 3.0, 0.9) == [a, b]  # its own first, then the others' best
    mem.record("logreg", "fp", "log_loss", 1.0, 0.5, b, 0.45)
    mem.record("logreg", "fp", "log_loss", 1.0, 0.5, a, 0.50)
    assert mem.best_params("logreg", "fp", "log_loss", 2.0, 0.5) == [b, a]  # unseen config; lower is better
    assert mem.best_params("logreg", "fp", "ks") == [a, b]  # the student's best anywhere


def _write_many(args):
    path, worker = args
    mem = OptimizationMemory(path)
    for i in range(30):
        mem.record("tree", "fp", "ks", 1.0, 0.5, {"max_depth": worker * 100 + i}, float(i))


def test_memory_writes_from_concurrent_processes_are_all_kept(tmp_path):
    """Two processes appending to one memory at once lose nothing (the JSON file shared one temp file)."""
    import multiprocessing as mp

    path = str(tmp_path / "m.journal")
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_write_many, [(path, 1), (path, 2)])
    mem = OptimizationMemory(path, keep=100)
    got = mem.best_params("tree", "fp", "ks", 1.0, 0.5)
    assert sorted(p["max_depth"] for p in got) == [w * 100 + i for w in (1, 2) for i in range(30)]


def test_selection_helpers():
    grid = config_grid(["a", "b"], {"a": [1.0], "b": [1.0, 2.0]}, [0.3, 0.9])
    assert len(grid) == 6 and ("b", 2.0, 0.9) in grid
    recs = [{"status": "ok", "val_score": s, "k": i} for i, s in enumerate([0.3, 0.5, 0.1])]
    recs.append({"status": "failed", "val_score": None, "k": 9})
    assert [r["k"] for r in promote(recs, 2, "ks")] == [1, 0]
    assert [r["k"] for r in promote(recs, 2, "log_loss")] == [2, 0]
    assert trials_to_reach([0.2, 0.4, 0.5], 0.4, "ks") == 2
    assert trials_to_reach([0.9, 0.5], 0.4, "log_loss") is None


def test_screening_budget_and_batches():
    from hpm_ray.distill.engine import _budgeted, batch_size

    lgbm, logreg = STUDENTS["lgbm"], STUDENTS["logreg"]
    assert _budgeted(lgbm, {}, 0.3) == {"n_estimators": 30}  # the student's default 100 rounds, scaled
    assert _budgeted(lgbm, {"n_estimators": 50, "num_leaves": 8}, 0.3) == {"n_estimators": 15, "num_leaves": 8}
    assert _budgeted(lgbm, {"n_estimators": 50}, 1.0) == {"n_estimators": 50}
    assert _budgeted(logreg, {"C": 2.0}, 0.3) == {"C": 2.0}  # no rounds to scale
    assert batch_size(32, 2) == 4 and batch_size(8, 2) == 2 and batch_size(3, 2) == 1
    assert batch_size(32, 64) == 1  # a big cluster keeps one config per task


def test_chain_note_says_why_the_chain_ended():
    from types import SimpleNamespace

    from hpm_ray.distill.chain import chain_note

    def rec(step, student, status="ok", gain=None):
        r = {"chain_step": step, "task": SimpleNamespace(student=student), "status": status}
        return r if gain is None else r | {"chain_gain": gain}

    assert (
        chain_note([rec(1, "logreg"), rec(2, "tree", gain=0.004)], 0.01)
        == "stage 2 (tree) gained 0.0040 < min_improvement 0.01"
    )
    assert chain_note([rec(1, "logreg"), rec(2, "tree", status="failed")], 0.01) == "stage 2 (tree) failed"
    assert chain_note([rec(1, "logreg"), rec(2, "tree", gain=0.02)], 0.01) == "all stages improved"


def test_splits_checks():
    X = pd.DataFrame({"a": np.arange(100.0)})
    with pytest.raises(DataError, match="constant"):
        make_splits(X, np.zeros(100), 0.2, 0.2, 0)
    with pytest.raises(DataError, match="missing"):
        make_splits(X, np.r_[np.zeros(50), np.ones(49), np.nan], 0.2, 0.2, 0)
    y = np.r_[np.zeros(97), np.ones(3)]  # too few positives to have one in every split
    with pytest.raises(DataError, match="class"):
        make_splits(X, y, 0.2, 0.2, 0)
    sp = make_splits(X, np.where(np.arange(100) % 2, "yes", "no"), 0.2, 0.2, 0)
    assert list(sp.classes) == ["no", "yes"] and len(sp.y_test) == 20 and len(sp.y_val) == 20


def test_a_given_test_block_is_the_test_split_and_the_rest_is_split_as_usual():
    """A drift retrain holds out served rows itself: exactly those rows are the test split, none of them is in
    train or validation, and every other row is in one of the two."""
    X = pd.DataFrame({"a": np.arange(100.0)})
    y = np.arange(100) % 2
    held = np.arange(70, 100)
    sp = make_splits(X, y, 0.2, 0.2, 0, test_rows=held)
    assert sorted(sp.X_test["a"]) == list(held.astype(float))
    assert sorted([*sp.X_train["a"], *sp.X_val["a"]]) == list(np.arange(70.0))
    assert len(sp.y_val) == round(70 * 0.2 / 0.8)  # the usual validation share of train + validation
    with pytest.raises(DataError, match="test split has one class"):
        make_splits(X, y, 0.2, 0.2, 0, test_rows=[0, 2, 4])


def test_distiller_rejects_bad_spec_and_teachers(credit_small):
    from hpm_ray.distill.auto import AutoDistiller

    X, y = credit_small
    with pytest.raises(SpecError, match="temperature must be > 0"):
        AutoDistiller(X, y, temperatures=[1.0, 0.0], progress=False)
    with pytest.raises(SpecError, match="alpha must be in"):
        AutoDistiller(X, y, alphas=[1.2], progress=False)
    with pytest.raises(SpecError, match="method"):
        AutoDistiller(X, y, method="fast", progress=False)
    from hpm_ray.distill.teachers import given_teachers

    sp = make_splits(X, y, 0.2, 0.2, 0)
    with pytest.raises(DataError, match="no predict_proba"):
        given_teachers([object()], sp)

    class NaNTeacher:
        def predict_proba(self, X):
            p = np.full((len(X), 2), 0.5)
            p[0] = np.nan
            return p

    with pytest.raises(DataError, match="non-finite"):
        given_teachers([NaNTeacher()], sp)


def test_munge_rows_stay_in_the_data_domain():
    from hpm_ray.distill.augment import munge

    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {"a": rng.normal(size=300), "n": rng.integers(0, 5, 300), "c": pd.Categorical(rng.choice(["u", "v"], 300))}
    )
    out = munge(X, 500, seed=1, time_budget=10.0, chunk=200)
    assert len(out) == 500 and list(out.columns) == list(X.columns)
    assert set(out.c.dropna()) <= {"u", "v"} and out.n.dtype == X.n.dtype
    assert out.a.between(X.a.min() - 3 * X.a.std(), X.a.max() + 3 * X.a.std()).mean() > 0.99
    assert not out.a.isin(X.a).all()  # new values, not copies of real rows
    assert len(munge(X, 500, time_budget=1e-9)) <= 200  # the time budget stops generation


def test_auto_method_follows_the_seed_heuristic():
    from hpm_ray.distill.auto import choose_method

    assert choose_method(30_000, 23) == "hpm"
    assert choose_method(5_000, 80) == "hpm"
    assert choose_method(800, 10) == "legacy"
    assert choose_method(5_000, 10) == "hpm"  # between the seed's two rules: the cheaper method


@pytest.mark.parametrize(
    "y, match",
    [
        (np.ones(10, dtype=np.int64), r"constant \(every value is 1\)"),
        (np.linspace(0.0, 1.0, 50), "50 distinct non-integer values: it looks continuous"),
        (np.arange(500), "500 classes \\(at most 100\\)"),
    ],
)
def test_a_target_that_is_not_class_labels_is_refused_in_one_short_line(y, match):
    with pytest.raises(DataError, match=match) as err:
        encode_target(y)
    assert len(str(err.value)) < 200


def test_float_coded_class_labels_are_accepted():
    codes, classes = encode_target(np.array([0.0, 1.0, 1.0, 0.0]))
    assert list(codes) == [0, 1, 1, 0] and list(classes) == [0.0, 1.0]
