"""Teacher probabilities for train / validation / test rows, computed once per dataset.

Given fitted teachers are only asked for ``predict_proba``. Without teachers, hpm-ray trains its default
ensemble (large LightGBM, XGBoost and a random forest, plus a LightGBM tuned on validation when the spec gives
it trials: ``teacher_search``); the training-row probabilities are then
out-of-fold (cross-fitted), so no student ever learns from a teacher that saw the row. Folds and final
fits run as Ray tasks on one object-store copy of the training data; the result is cached on disk by a
hash of the data content and the teacher settings.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpm_ray.distill.engine import TASK_OPTIONS
from hpm_ray.distill.soft_targets import as_proba_matrix
from hpm_ray.distill.splits import Splits
from hpm_ray.distill.teacher_search import TunedTeacher, tune_lightgbm
from hpm_ray.errors import DataError
from hpm_ray.runtime import runs_dir

DEFAULT_TEACHERS = ("lgbm_large", "xgb_large", "random_forest")
TUNED = "lgbm_tuned"  # the member whose parameters the validation search chose
# The boosted teachers share their budget and sampling settings; each adds its own tree shape. The library is
# imported on first use (module, class), so importing this module stays cheap.
BOOSTED = {
    "lgbm_large": ("lightgbm", "LGBMClassifier", dict(num_leaves=63, subsample_freq=1, verbose=-1)),
    "xgb_large": ("xgboost", "XGBClassifier", dict(max_depth=6, tree_method="hist", enable_categorical=True)),
}


@dataclass
class TeacherSet:
    names: list[str]
    train: list[np.ndarray]  # out-of-fold when hpm-ray trained the teacher
    val: list[np.ndarray]
    test: list[np.ndarray]
    models: list = field(default_factory=list)  # fitted on all training rows (labels synthetic rows)
    out_of_fold: bool = False
    from_cache: bool = False
    tuned: TunedTeacher | None = None  # the search behind the tuned member (its parameters, budget, seconds)


def make_teacher(name: str, n_trees: int, seed: int, params: dict | None = None):
    """A fresh estimator of the default ensemble (single-threaded: Ray runs folds in parallel).

    ``params`` are the tuned member's (``n_trees`` does not apply to it: its rounds were early-stopped)."""
    if name == TUNED:
        from lightgbm import LGBMClassifier

        return LGBMClassifier(random_state=seed, n_jobs=1, verbose=-1, **(params or {}))
    if name in BOOSTED:
        module, cls, own = BOOSTED[name]
        common = dict(
            n_estimators=n_trees,
            learning_rate=0.03,
            subsample=0.8,
            colsample_bytree=0.8,
            random_state=seed,
            n_jobs=1,
        )
        return getattr(importlib.import_module(module), cls)(**common, **own)
    if name == "random_forest":
        from sklearn.compose import ColumnTransformer, make_column_selector
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OrdinalEncoder

        encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
        prep = ColumnTransformer(
            [("cat", encode, make_column_selector(dtype_include=["category", "object"]))], remainder="passthrough"
        )
        return Pipeline(
            [
                ("prep", prep),
                (
                    "rf",
                    RandomForestClassifier(
                        n_estimators=n_trees, min_samples_leaf=5, max_features="sqrt", random_state=seed, n_jobs=1
                    ),
                ),
            ]
        )
    raise DataError(f"unknown default teacher {name!r}")


def _fold_task(box: list, name: str, n_trees: int, seed: int, fit_rows, pred_rows, extra, params=None):
    """Fit on ``fit_rows`` of the shared training set; return probabilities for ``pred_rows`` (+ extra frames)."""
    import ray

    data = ray.get(box[0])
    X, y = data["X"], data["y"]
    model = make_teacher(name, n_trees, seed, params).fit(X.iloc[fit_rows], y[fit_rows])
    oof = model.predict_proba(X.iloc[pred_rows]) if pred_rows is not None else None
    others = [model.predict_proba(data[k]) for k in extra]
    return oof, others, (model if extra else None)


def content_hash(splits: Splits, *settings) -> str:
    h = hashlib.sha256()
    for X, y in ((splits.X_train, splits.y_train), (splits.X_val, splits.y_val), (splits.X_test, splits.y_test)):
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
        h.update(np.asarray(y).tobytes())
    h.update(repr(settings).encode())
    return h.hexdigest()[:20]


def _tune_task(box: list, trials: int, seed: int) -> TunedTeacher:
    """The validation search of the tuned member, on the shared training and validation rows (no test rows)."""
    import ray

    data = ray.get(box[0])
    return tune_lightgbm(data["X"], data["y"], data["val"], data["y_val"], trials, seed)


def train_default_teachers(
    splits: Splits, n_trees: int, folds: int, seed: int, progress=None, names=DEFAULT_TEACHERS, tune_trials: int = 0
) -> TeacherSet:
    """Cross-fitted default ensemble, cached in ``runs_dir()/distill_cache`` by content hash.

    With ``tune_trials`` > 0 a LightGBM tuned on validation (:func:`teacher_search.tune_lightgbm`) joins the
    ensemble as ``lgbm_tuned``; its search runs as one Ray task beside the other members' fits, and its folds
    start when it returns."""
    import ray
    from sklearn.model_selection import StratifiedKFold

    settings = (tuple(names), n_trees, folds, seed) + ((tune_trials,) if tune_trials else ())
    cache = runs_dir() / "distill_cache" / f"teachers-{content_hash(splits, *settings)}.pkl"
    if cache.is_file():
        ts = pickle.loads(cache.read_bytes())
        ts.from_cache = True
        return ts
    box = [
        ray.put(
            {
                "X": splits.X_train,
                "y": splits.y_train,
                "val": splits.X_val,
                "y_val": splits.y_val,
                "test": splits.X_test,
            }
        )
    ]
    remote = ray.remote(**TASK_OPTIONS)(_fold_task)
    n = len(splits.y_train)
    fold_idx = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(n), splits.y_train))
    jobs: dict = {}

    def submit(name: str, params: dict | None = None) -> None:
        for f, (fit_rows, pred_rows) in enumerate(fold_idx):
            jobs[remote.remote(box, name, n_trees, seed, fit_rows, pred_rows, [], params)] = (name, f)
        jobs[remote.remote(box, name, n_trees, seed, np.arange(n), None, ["val", "test"], params)] = (name, "full")

    names = list(names)
    tuned = None
    if tune_trials:
        jobs[ray.remote(**TASK_OPTIONS)(_tune_task).remote(box, tune_trials, seed)] = (TUNED, "search")
        names.append(TUNED)
    for name in names:
        if name != TUNED:
            submit(name)
    n_fits = len(names) * (folds + 1) + bool(tune_trials)
    results = {}
    pending = list(jobs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        results[jobs[ready[0]]] = ray.get(ready[0])
        if jobs[ready[0]] == (TUNED, "search"):
            tuned = results[(TUNED, "search")]
            before = set(jobs)
            submit(TUNED, tuned.params)
            pending += [r for r in jobs if r not in before]
        if progress:
            progress(f"teachers: {len(results)}/{n_fits} jobs (out-of-fold x{folds} + final, search of {TUNED})")
    k = splits.n_classes
    ts = TeacherSet(names=names, train=[], val=[], test=[], out_of_fold=True, tuned=tuned)
    for name in names:
        oof = np.zeros((n, k))
        for f, (_, pred_rows) in enumerate(fold_idx):
            oof[pred_rows] = results[(name, f)][0]
        _, (val, test), model = results[(name, "full")]
        ts.train.append(oof)
        ts.val.append(np.asarray(val, float))
        ts.test.append(np.asarray(test, float))
        ts.models.append(model)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(ts))
    return ts


def given_teachers(teachers: list, splits: Splits) -> TeacherSet:
    """Probabilities of user-supplied fitted teachers (not out-of-fold: we do not know what they saw)."""
    ts = TeacherSet(names=[], train=[], val=[], test=[], models=list(teachers))
    for i, t in enumerate(teachers):
        name = f"{type(t).__name__}_{i}"
        if not callable(getattr(t, "predict_proba", None)):
            raise DataError(f"teacher {name} has no predict_proba; pass fitted classifiers")
        ts.names.append(name)
        for X, out in ((splits.X_train, ts.train), (splits.X_val, ts.val), (splits.X_test, ts.test)):
            out.append(as_proba_matrix(t.predict_proba(X), splits.n_classes, what=f"probabilities of teacher {name}"))
    return ts
