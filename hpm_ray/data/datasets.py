"""The sample data shipped inside the package (see ``hpm_ray/data/bundled/README.md`` for sources and licences)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from hpm_ray.data.io import Series, prepare_series, prepare_tabular, read_table

CREDIT_TARGET = "default_payment_next_month"
_FILES = {"credit": "taiwan_credit_default.csv.gz", "btc": "btc_usd_bitstamp_1h.csv.gz"}


def bundled_path(name: str) -> Path:
    """Path of a bundled file: ``"credit"`` or ``"btc"``."""
    return Path(str(resources.files("hpm_ray.data") / "bundled" / _FILES[name]))


def load_credit_default() -> tuple[pd.DataFrame, pd.Series]:
    """Taiwan credit-card default (UCI 350, 30,000 rows): features ``X`` (ID dropped) and binary target ``y``."""
    tab = prepare_tabular(read_table(bundled_path("credit")), CREDIT_TARGET, drop=["ID"])
    return tab.X, tab.y


def load_btc_hourly() -> Series:
    """BTC/USD hourly OHLCV from Bitstamp, 2018-05-15 to 2022-08-19 (37,386 bars), validated and time-indexed."""
    return prepare_series(read_table(bundled_path("btc")), time_col="timestamp", price_col="close")
