"""The search inside one config (no Ray): each study draws its own points, and TPE learns within its budget."""

import numpy as np
import pytest

from hpm_ray.distill.engine import ConfigTask, fit_config, startup_trials, study_seed


@pytest.fixture(scope="module")
def payload():
    """1,500 credit rows: 1,000 to train on, 500 to score; the teacher is a cross-fitted LightGBM."""
    import lightgbm as lgb
    from sklearn.model_selection import cross_val_predict

    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    X, y = X.iloc[:1500].reset_index(drop=True), y.iloc[:1500].to_numpy()
    teacher = cross_val_predict(
        lgb.LGBMClassifier(n_estimators=60, verbose=-1, n_jobs=1), X, y, cv=3, method="predict_proba"
    )
    return {
        "X_train": X.iloc[:1000],
        "y_train": y[:1000],
        "X_val": X.iloc[1000:],
        "y_val": y[1000:],
        "teacher_train": teacher[:1000],
        "teacher_val": teacher[1000:],
        "X_aug": None,
        "teacher_aug": None,
    }


def test_study_seed_is_stable_and_distinct_per_config():
    assert study_seed("hpm:full:lgbm:T1:a0.5", 0) == study_seed("hpm:full:lgbm:T1:a0.5", 0)  # not hash(): no salt
    # the first 4 bytes of sha256("0:<key>"): every process and Python version agrees
    assert study_seed("hpm:full:lgbm:T1:a0.5", 0) == 3_313_629_522
    assert study_seed("hpm:full:lgbm:T2:a0.5", 0) != study_seed("hpm:full:lgbm:T1:a0.5", 0)
    assert study_seed("hpm:full:lgbm:T1:a0.5", 1) != study_seed("hpm:full:lgbm:T1:a0.5", 0)
    assert [startup_trials(n) for n in (1, 2, 10, 20)] == [2, 2, 2, 5]


def test_two_configs_of_one_student_draw_different_parameters(payload):
    """Done-when 1: the old shared sampler seed gave every config the same parameter sets."""

    def drawn(key):
        task = ConfigTask(key=key, student="gbm20", temperature=1.0, alpha=0.5, n_trials=3, seed=0)
        return [p for _, p in fit_config(payload, task, payload["teacher_train"])["top"]]  # top 3 of 3: all

    a, b = drawn("hpm:full:gbm20:T1:a0.5"), drawn("hpm:full:gbm20:T2:a0.5")
    assert len(a) == len(b) == 3
    assert not any(p in b for p in a)


@pytest.mark.slow
def test_a_20_trial_study_learns(payload):
    """Done-when 1: trials 6-20 (TPE) score better than the 5 random start-up trials, on average over seeds.

    A sampler that does not learn (random search) has the same expected score in both parts. Measured on this
    setup over 10 seeds, the late - early KS gain per study was +0.003 +- 0.0036 (s.e.) with random search
    and +0.043 +- 0.0072 with the engine's TPE; a 5-seed mean has about 1.4x those errors, so the 0.02 threshold
    passes random search with probability < 0.1 % and fails TPE with about 1 %.
    """
    gains, best_gains = [], []
    for seed in range(5):
        task = ConfigTask(
            key="hpm:full:gbm20:T2:a0.7",
            student="gbm20",
            temperature=2.0,
            alpha=0.7,
            n_trials=20,
            seed=seed,
            metric="ks",
            keep_model=False,
        )
        h = np.asarray(fit_config(payload, task, payload["teacher_train"])["history"])
        assert len(h) == 20
        gains.append(h[5:].mean() - h[:5].mean())
        best_gains.append(h.max() - h[:5].max())
    assert np.mean(gains) > 0.02, gains
    assert np.mean(best_gains) > 0.0, best_gains  # the study's best beats its first 5 trials on average
