"""Is the default teacher worth distilling from? Against a tuned single LightGBM on the same splits.

Per seed, on the bundled credit data split as ``hpm-ray distill`` splits it (stratified train / validation /
test): the default teacher ensemble (cross-fitted LightGBM, XGBoost and random forest, fused with weights fit
on validation), one LightGBM tuned by Optuna TPE on hard labels (``--trials`` fits, chosen by validation
log loss, rounds by early stopping on validation), and optionally the best student of a default HPM
distillation run (``--students``). All scored once on the test block. Prints per seed and the mean
difference with its 95 % t-interval over seeds. Target (issue 15): teacher >= tuned - 0.002 AUC, best student
>= tuned - 0.002.

    python bench/teacher.py                      # 3 seeds, 30 trials, teachers only
    python bench/teacher.py --students --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def tune_lightgbm(sp, trials: int, seed: int):
    """Best-on-validation LightGBM over a standard space; returns (validation log loss, test probabilities)."""
    import lightgbm as lgb
    import optuna

    from hpm_ray.metrics import log_loss

    def fit(params):
        m = lgb.LGBMClassifier(n_estimators=2000, random_state=seed, n_jobs=2, verbose=-1, **params)
        m.fit(
            sp.X_train,
            sp.y_train,
            eval_X=sp.X_val,
            eval_y=sp.y_val,
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        return m

    def objective(trial):
        params = {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 200, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "subsample_freq": 1,
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        }
        m = fit(params)
        trial.set_user_attr("params", params)
        return log_loss(sp.y_val, m.predict_proba(sp.X_val))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    best = fit(study.best_trial.user_attrs["params"])
    return study.best_value, best.predict_proba(sp.X_test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--trials", type=int, default=30, help="Optuna trials of the tuned LightGBM (default 30)")
    ap.add_argument("--rows", type=int, default=None, help="stratified subsample (default: all 30,000 rows)")
    ap.add_argument("--students", action="store_true", help="also run a default HPM distillation per seed")
    a = ap.parse_args()

    import optuna

    from hpm_ray.config import parse_list
    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.distill import fusion
    from hpm_ray.distill.interpretable import t_interval
    from hpm_ray.distill.spec import DistillSpec
    from hpm_ray.distill.splits import make_splits
    from hpm_ray.distill.teachers import train_default_teachers
    from hpm_ray.metrics import roc_auc
    from hpm_ray.runtime import init_ray

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a script: it may change its own process
    init_ray(None, 2, False)
    X, y = load_credit_default()
    rows = []
    for seed in parse_list(a.seeds, int, "--seeds"):
        spec = DistillSpec(seed=seed, max_rows=a.rows)
        sp = make_splits(X, y, spec.validation_size, spec.test_size, seed, spec.max_rows)
        t0 = time.perf_counter()
        ts = train_default_teachers(sp, spec.teacher_trees, spec.teacher_folds, seed)
        teacher = roc_auc(sp.y_test, fusion.combine(ts.test, fusion.fit_weights(ts.val, sp.y_val)))
        t1 = time.perf_counter()
        _, tuned_proba = tune_lightgbm(sp, a.trials, seed)
        tuned = roc_auc(sp.y_test, tuned_proba)
        t2 = time.perf_counter()
        row = {"seed": seed, "teacher": teacher, "tuned": tuned}
        line = (
            f"seed {seed}: teacher {teacher:.4f} ({t1 - t0:.0f} s{', cached' if ts.from_cache else ''}), "
            f"tuned LightGBM {tuned:.4f} ({a.trials} trials, {t2 - t1:.0f} s)"
        )
        if a.students:
            from hpm_ray.distill.auto import AutoDistiller

            d = AutoDistiller(X, y, method="hpm", spec=spec, progress=False)
            d.run()
            best = d.summary()["best"]
            row["student"] = best["auc"]
            line += f", best student {best['auc']:.4f} ({best['student']}, {time.perf_counter() - t2:.0f} s)"
        rows.append(row)
        print(line, flush=True)
    print(f"\n== test AUC, mean over {len(rows)} seeds, differences with 95 % t-intervals")
    for who in ("teacher", "student"):
        if who not in rows[0]:
            continue
        diff = np.array([r[who] - r["tuned"] for r in rows])
        m, lo, hi = t_interval(diff)
        ok = "meets" if m >= -0.002 else "misses"
        print(
            f"{who:8s} {np.mean([r[who] for r in rows]):.4f} vs tuned {np.mean([r['tuned'] for r in rows]):.4f}: "
            f"diff {m:+.4f} [{lo:+.4f}, {hi:+.4f}] ({ok} the target >= -0.002 on the mean)"
        )


if __name__ == "__main__":
    main()
