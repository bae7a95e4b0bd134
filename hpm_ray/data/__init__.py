"""Data layer: loading and validation, time-series features, purged splitters, bundled samples."""

from hpm_ray.data.features import forward_log_return, make_supervised, ohlcv_features
from hpm_ray.data.io import Series, Tabular, prepare_series, prepare_tabular, read_table
from hpm_ray.data.splitters import Blocks, CombinatorialPurgedCV, PurgedWalkForward

__all__ = [
    "Blocks",
    "CombinatorialPurgedCV",
    "PurgedWalkForward",
    "Series",
    "Tabular",
    "forward_log_return",
    "make_supervised",
    "ohlcv_features",
    "prepare_series",
    "prepare_tabular",
    "read_table",
]
