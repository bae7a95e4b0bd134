"""The tuned teacher member: its fixed rounds reproduce the fit its search chose, and it never sees test rows."""

import numpy as np
import pandas as pd
import pytest

from hpm_ray.distill.teacher_search import MAX_ROUNDS, tune_lightgbm
from hpm_ray.distill.teachers import TUNED, make_teacher
from hpm_ray.metrics import log_loss


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    y = (X.a + 0.5 * X.b * X.c + rng.normal(scale=1.0, size=n) > 0).astype(int).to_numpy()
    return X, y


def test_tuned_member_is_the_chosen_fit_with_its_early_stopped_rounds():
    X, y = _data(600, 0)
    Xv, yv = _data(300, 1)
    t = tune_lightgbm(X, y, Xv, yv, trials=4, seed=3)
    assert t.trials == 4 and 1 <= t.params["n_estimators"] < MAX_ROUNDS  # stopped early on validation
    member = make_teacher(TUNED, n_trees=999, seed=3, params=t.params).fit(X, y)  # n_trees does not apply
    assert member.n_estimators == t.params["n_estimators"]
    assert log_loss(yv, member.predict_proba(Xv)) == pytest.approx(t.val_log_loss, abs=1e-9)
