"""Loaders, schema checks and time-series features."""

import gzip

import numpy as np
import pandas as pd
import pytest

from hpm_ray.data.datasets import load_btc_hourly, load_credit_default
from hpm_ray.data.features import (
    detect_volume_columns,
    forward_log_return,
    make_supervised,
    ohlcv_features,
)
from hpm_ray.data.io import prepare_series, prepare_tabular, read_table
from hpm_ray.errors import DataError


def _ohlcv(n=600, seed=0, volume_name="Volume (base)"):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": close * (1 + rng.normal(0, 0.001, n)),
            "high": close * 1.005,
            "low": close * 0.995,
            "close": close,
            volume_name: rng.uniform(1, 10, n),
        }
    )


def test_bundled_datasets_load_with_expected_shapes():
    X, y = load_credit_default()
    assert X.shape == (30_000, 23) and "ID" not in X and set(y.unique()) == {0, 1}
    assert abs(y.mean() - 0.2212) < 1e-3
    s = load_btc_hourly()
    assert len(s.frame) == 37_386 and s.frame.index.is_monotonic_increasing and s.frame.index.tz is not None


def test_read_table_formats(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    df.to_csv(tmp_path / "t.csv", index=False)
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        df.to_csv(f, index=False)
    df.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.csv.gz", "t.parquet"):
        got = read_table(tmp_path / name)
        assert list(got.columns) == ["a", "b"] and got["b"].isna().sum() == 1


@pytest.mark.parametrize("content,match", [(None, "not found"), ("", "empty"), ("a,b\n", "no rows")])
def test_read_table_refuses_missing_and_empty(tmp_path, content, match):
    p = tmp_path / "x.csv"
    if content is not None:
        p.write_text(content)
    with pytest.raises(DataError, match=match):
        read_table(p)


def test_read_table_refuses_unknown_format(tmp_path):
    p = tmp_path / "x.xlsx"
    p.write_text("zzz")
    with pytest.raises(DataError, match="unsupported data format"):
        read_table(p)


def test_prepare_tabular_categoricals_and_missing_features():
    df = pd.DataFrame({"num": [1.0, np.nan, 3.0, 4.0], "cat": ["a", "b", None, "a"], "y": [0, 1, 0, 1]})
    tab = prepare_tabular(df, "y")
    assert tab.categorical == ["cat"] and str(tab.X["cat"].dtype) == "category"
    assert tab.X["num"].isna().sum() == 1  # missing features are kept for the models to handle


@pytest.mark.parametrize(
    "frame,match",
    [
        (pd.DataFrame({"x": [1, 2]}), "missing target column 'y'"),
        (pd.DataFrame({"x": [1, 2, 3], "y": [0, np.nan, 1]}), "target 'y' has 1 missing value"),
        (pd.DataFrame({"x": [1, 2], "y": [1, 1]}), "constant"),
        (pd.DataFrame({"x": [1.0, np.inf, 3.0], "z": [1, 2, 3], "y": [0, 1, 0]}), "feature 'x' has 1 infinite value"),
    ],
)
def test_prepare_tabular_bad_targets(frame, match):
    with pytest.raises(DataError, match=match):
        prepare_tabular(frame, "y")


def test_prepare_tabular_refuses_to_drop_a_column_it_does_not_have():
    df = pd.DataFrame({"id": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    assert list(prepare_tabular(df, "y", drop=["id"]).X.columns) == ["x"]
    with pytest.raises(DataError, match="cannot drop 'ids': no such column"):
        prepare_tabular(df, "y", drop=["ids"])


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.drop(columns=["timestamp"]), "missing time column 'timestamp'"),
        (lambda d: d.drop(columns=["close"]), "missing price column 'close'"),
        (lambda d: d.assign(close=d["close"].astype(object).where(d.index != 5, "n/a")), "non-numeric"),
        (lambda d: d.assign(close=d["close"].where(d.index != 7, -1.0)), "<= 0"),
        (lambda d: d.assign(close=d["close"].where(d.index != 7, np.inf)), "1 non-numeric, missing or infinite"),
        (lambda d: d.assign(close=100.0), "constant"),
        (lambda d: pd.concat([d.iloc[:10], d.iloc[9:]]), "duplicate timestamp"),
        (lambda d: d.iloc[::-1], "not sorted ascending"),
        (lambda d: d.assign(timestamp=d["timestamp"].where(d.index != 3, "yesterday")), "not timestamps"),
        (lambda d: d.assign(timestamp=range(len(d))), "holds numbers, not timestamps"),
    ],
)
def test_prepare_series_bad_inputs(mutate, match):
    with pytest.raises(DataError, match=match) as err:
        prepare_series(mutate(_ohlcv(50)).reset_index(drop=True), "timestamp", "close")
    assert len(str(err.value).splitlines()) == 1 and "You might want" not in str(err.value)


def test_features_use_only_the_past():
    df = _ohlcv(600)
    s = prepare_series(df, "timestamp", "close")
    f1 = ohlcv_features(s)
    later = df.copy()
    later.loc[400:, ["open", "high", "low", "close"]] *= 1.5  # change the future only
    later.loc[400:, "Volume (base)"] *= 7
    f2 = ohlcv_features(prepare_series(later, "timestamp", "close"))
    pd.testing.assert_frame_equal(f1.iloc[:400], f2.iloc[:400])
    assert not f1.iloc[400:].equals(f2.iloc[400:])


def test_volume_columns_found_by_meaning_not_by_name():
    s = prepare_series(_ohlcv(300, volume_name="VolumeUSDT"), "timestamp", "close")
    assert detect_volume_columns(s.frame, ("close", "high", "low", "open")) == ["VolumeUSDT"]
    assert any(c.startswith("volumeusdt_z_") for c in ohlcv_features(s).columns)
    no_vol = prepare_series(_ohlcv(300).drop(columns=["Volume (base)", "high", "low"]), "timestamp", "close")
    cols = ohlcv_features(no_vol).columns
    assert not any("_z_" in c and not c.startswith("mom") for c in cols) and "range_1" not in cols


def test_forward_log_return_hand_computed():
    p = pd.Series([100.0, 110.0, 121.0, 133.1])
    r = forward_log_return(p, 2)
    assert r.iloc[0] == pytest.approx(np.log(1.21)) and r.iloc[1] == pytest.approx(np.log(1.21))
    assert r.iloc[2:].isna().all()


def test_make_supervised_drops_warmup_and_tail_and_refuses_short_series():
    s = prepare_series(_ohlcv(600), "timestamp", "close")
    X, y = make_supervised(s, horizon=10, windows=(6, 24))
    assert len(X) == 600 - 24 - 10 and X.index[0] == s.frame.index[24]
    assert y.notna().all() and X[[c for c in X if not c.startswith("volume")]].notna().all().all()
    close = s.frame["close"]
    assert y.iloc[0] == pytest.approx(np.log(close.iloc[34] / close.iloc[24]))
    with pytest.raises(DataError, match="needs at least"):
        make_supervised(s, horizon=590, windows=(6, 24))
