"""Every registered quantile learner honours the protocol the HPO trains through (no Ray: plain fits)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hpm_ray.errors import SpecError
from hpm_ray.hpo.learners import LEARNERS, get_learner, register_learner
from hpm_ray.hpo.space import Param
from hpm_ray.metrics import crossing_rate, mean_pinball

QUANTILES = (0.1, 0.5, 0.9)


@pytest.fixture(scope="module")
def heteroscedastic():
    """y = 2 x0 + (0.5 + |x1|) * noise: the median follows x0, the spread |x1|; 1,500 train, 500 test rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)).astype(np.float32)
    y = 2 * X[:, 0] + (0.5 + np.abs(X[:, 1])) * rng.normal(size=2000)
    return X[:1500], y[:1500], X[1500:], y[1500:]


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_learner_grows_in_chunks_beats_constant_quantiles_and_pickles(name, heteroscedastic):
    X, y, X_test, y_test = heteroscedastic
    learner = get_learner(name)
    chunked = learner.start(learner.defaults, X, y, QUANTILES, seed=0)
    chunked.grow(5)
    early = chunked.predict(X_test)
    chunked.grow(25)  # ASHA's resource is rounds: reporting between chunks must not change the model
    whole = learner.start(learner.defaults, X, y, QUANTILES, seed=0)
    whole.grow(30)
    late = chunked.predict(X_test)
    assert early.shape == late.shape == (len(X_test), len(QUANTILES)) and not np.allclose(early, late)
    np.testing.assert_allclose(late, whole.predict(X_test), rtol=1e-6)
    constant = np.tile(np.quantile(y, QUANTILES), (len(X_test), 1))
    assert mean_pinball(y_test, late, QUANTILES) < 0.7 * mean_pinball(y_test, constant, QUANTILES)  # ~0.57 both
    assert crossing_rate(late) < 0.1  # columns in quantile order: swapped ones would cross on most rows
    again = pickle.loads(pickle.dumps(chunked))  # as Ray returns it from a refit and MLflow stores it
    np.testing.assert_array_equal(again.predict(X_test), late)


def test_registry_refuses_a_learner_without_defaults_for_its_space():
    class Half:
        name, short, title = "half", "half", "Half"
        space = (Param("a", 0.0, 1.0), Param("b", 0.0, 1.0))
        defaults = {"a": 0.5}  # noqa: RUF012

    with pytest.raises(SpecError, match="a default for each parameter"):
        register_learner(Half())
    assert "half" not in LEARNERS
    with pytest.raises(SpecError, match="unknown learner 'half'; known: lightgbm"):
        get_learner("half")


def test_a_forecaster_pickled_before_learner_plugins_still_predicts(heteroscedastic):
    """Versions registered earlier hold ``boosters`` (a list of LightGBM boosters) instead of ``model``, and no
    ``online`` calibration."""
    import pandas as pd

    from hpm_ray.hpo.conformal import ConformalQuantiles
    from hpm_ray.hpo.pyfunc import QuantileForecaster

    X, y, X_test, _ = heteroscedastic
    lgbm = get_learner("lightgbm")
    model = lgbm.start(lgbm.defaults, X[:1000], y[:1000], QUANTILES, seed=0)
    model.grow(10)
    cq = ConformalQuantiles(list(QUANTILES)).fit(model.predict(X[1000:]), y[1000:])
    frame = pd.DataFrame(X_test, columns=["a", "b", "c"])
    now = QuantileForecaster(model, cq, frame, horizon=1)
    state = pickle.loads(pickle.dumps(now)).__dict__
    state["boosters"] = state.pop("model").boosters
    del state["online"]  # and before online intervals in serving: it serves the static interval alone
    del state["features"]  # and before the volatility-state columns: it reads every column
    before = QuantileForecaster.__new__(QuantileForecaster)
    before.__setstate__(state)
    pd.testing.assert_frame_equal(before.predict(None, frame), now.predict(None, frame))
    assert before.online is None and set(before.mlmodel_metadata()) == {"hpm_ray_input_schema"}
    # feature rows with columns the model was not fitted on (a baseline's volatility state): it reads its own
    wide = frame.assign(ewma_vol_0_94=1.0)[["ewma_vol_0_94", "a", "b", "c"]]
    narrow = QuantileForecaster(model, cq, wide, horizon=1, features=["a", "b", "c"])
    assert narrow.schema.names == ["ewma_vol_0_94", "a", "b", "c"]
    pd.testing.assert_frame_equal(narrow.predict(None, wide), now.predict(None, frame))
