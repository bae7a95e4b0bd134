"""Purged splitters for overlapping-label time series.

Row i's target spans bars (i, i + horizon]. A row of an earlier block whose label reaches into a later block
leaks the future into training, so every earlier block ends at least ``horizon + embargo`` rows before the
next one starts: for an earlier row i and the later block's first row s, ``s - i > horizon + embargo``.
The embargo (default: the horizon) adds margin for serial correlation beyond the label window.

Both splitters are scikit-learn cross-validators (``split(X, y, groups)`` / ``get_n_splits``), so
``cross_validate``, ``GridSearchCV`` and friends take them as ``cv=``; rows must be in time order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np
from sklearn.model_selection import BaseCrossValidator

from hpm_ray.errors import DataError


def _n_rows(X) -> int:
    """Rows of an array, frame, sparse matrix or list (``len`` is ambiguous for sparse matrices)."""
    shape = getattr(X, "shape", None)
    return int(shape[0]) if shape is not None else len(X)


def _check(horizon: int, embargo: int | None) -> tuple[int, int]:
    if horizon < 1:
        raise DataError(f"horizon must be >= 1, got {horizon}")
    embargo = horizon if embargo is None else embargo
    if embargo < 0:
        raise DataError(f"embargo must be >= 0, got {embargo}")
    return horizon, embargo


@dataclass(frozen=True)
class Blocks:
    """Index arrays of the four time-ordered blocks of a walk-forward split."""

    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    test: np.ndarray

    @property
    def search(self) -> np.ndarray:
        """Train + validation: what a model may be refit on once hyperparameters are chosen."""
        return np.concatenate([self.train, self.validation])

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", "validation", "calibration", "test")}


@dataclass(frozen=True)
class PurgedWalkForward(BaseCrossValidator):
    """Train | gap | validation | gap | calibration | gap | test, in time order.

    ``fractions`` share the rows left after the gaps (:meth:`blocks`). ``folds(n)`` cuts the validation block
    into ``n_folds`` consecutive chunks, each validated by a model trained on every row more than ``gap`` before
    it (expanding window): the purged walk-forward CV the HPO scores trials with, and what :meth:`split` yields.
    Calibration and test rows are in no fold, so a search run through this CV never sees them.

    Parameters
    ----------
    horizon : int
        Bars a row's label looks ahead.
    embargo : int, optional
        Extra rows dropped after each label window; default ``horizon``.
    fractions : tuple of 4 floats
        Relative sizes of the train, validation, calibration and test blocks.
    min_block : int
        Fewest rows a block may have.
    n_folds : int
        Folds :meth:`split` yields.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.model_selection import cross_validate
    >>> X = np.arange(1000.0).reshape(-1, 1); y = np.sin(X[:, 0] / 50)
    >>> cv = PurgedWalkForward(horizon=5, n_folds=3)
    >>> cv.blocks(len(X)).sizes()
    {'train': 534, 'validation': 194, 'calibration': 97, 'test': 145}
    >>> len(cross_validate(Ridge(), X, y, cv=cv)["test_score"])
    3
    """

    horizon: int
    embargo: int | None = None
    fractions: tuple[float, float, float, float] = (0.55, 0.2, 0.1, 0.15)
    min_block: int = 20
    n_folds: int = 3

    def __post_init__(self) -> None:
        _check(self.horizon, self.embargo)
        if len(self.fractions) != 4 or any(f <= 0 for f in self.fractions):
            raise DataError(
                f"fractions must be 4 positive numbers (train, validation, calibration, test), got {self.fractions}"
            )

    @property
    def gap(self) -> int:
        h, e = _check(self.horizon, self.embargo)
        return h + e

    def min_rows(self) -> int:
        fr = np.asarray(self.fractions, dtype=float) / sum(self.fractions)
        return int(np.ceil(self.min_block / fr.min())) + 3 * self.gap

    def blocks(self, n: int) -> Blocks:
        """The four purged blocks of ``n`` time-ordered rows; a DataError if they would be too small."""
        usable = n - 3 * self.gap
        fr = np.asarray(self.fractions, dtype=float) / sum(self.fractions)
        sizes = np.floor(fr * max(usable, 0)).astype(int)
        sizes[0] += max(usable, 0) - sizes.sum()
        if usable <= 0 or sizes.min() < self.min_block:
            raise DataError(
                f"{n} rows are too few for horizon {self.horizon}: four blocks of >= {self.min_block} rows "
                f"with {self.gap}-row gaps need at least {self.min_rows()}"
            )
        bounds, start = [], 0
        for size in sizes:
            bounds.append(np.arange(start, start + size))
            start += size + self.gap
        return Blocks(*bounds)

    def folds(self, n: int, n_folds: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Expanding-window (train, validation) pairs over the validation block, purged by ``gap``."""
        n_folds = self.n_folds if n_folds is None else n_folds
        if n_folds < 1:
            raise DataError(f"n_folds must be >= 1, got {n_folds}")
        blocks = self.blocks(n)
        chunks = np.array_split(blocks.validation, n_folds)
        if min(len(c) for c in chunks) < self.min_block // 2 or len(blocks.train) < self.min_block:
            raise DataError(f"validation block of {len(blocks.validation)} rows is too small for {n_folds} folds")
        out = []
        for chunk in chunks:
            train = np.arange(0, chunk[0] - self.gap)
            out.append((train, chunk))
        return out

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """scikit-learn's CV protocol: :meth:`folds` over ``len(X)`` rows (``y`` and ``groups`` unused)."""
        yield from self.folds(_n_rows(X))

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_folds


@dataclass(frozen=True)
class CombinatorialPurgedCV(BaseCrossValidator):
    """Combinatorial purged CV (López de Prado): every choice of ``n_test_groups`` out of ``n_groups``.

    Training rows within ``horizon + embargo`` of any test row, on either side, are removed: before a test
    group their labels overlap it; after it, serial correlation would let the model peek. A scikit-learn
    cross-validator: ``cross_validate(model, X, y, cv=CombinatorialPurgedCV(horizon=5))``.
    """

    horizon: int
    n_groups: int = 6
    n_test_groups: int = 2
    embargo: int | None = None

    def __post_init__(self) -> None:
        _check(self.horizon, self.embargo)
        if not 1 <= self.n_test_groups < self.n_groups:
            raise DataError(f"need 1 <= n_test_groups < n_groups, got {self.n_test_groups} of {self.n_groups}")

    @property
    def gap(self) -> int:
        h, e = _check(self.horizon, self.embargo)
        return h + e

    def pairs(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train, test) index pairs over ``n`` time-ordered rows, one per combination of test groups."""
        if n < self.n_groups * (2 * self.gap + 2):
            raise DataError(f"{n} rows are too few for {self.n_groups} purged groups with a {self.gap}-row gap")
        groups = np.array_split(np.arange(n), self.n_groups)
        out = []
        for test_ids in combinations(range(self.n_groups), self.n_test_groups):
            test = np.concatenate([groups[g] for g in test_ids])
            keep = np.ones(n, dtype=bool)
            for g in test_ids:
                lo, hi = groups[g][0], groups[g][-1]
                keep[max(0, lo - self.gap) : min(n, hi + self.gap + 1)] = False
            out.append((np.flatnonzero(keep), test))
        return out

    def split(self, X, y=None, groups=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """scikit-learn's CV protocol: :meth:`pairs` over ``len(X)`` rows (``y`` and ``groups`` unused)."""
        yield from self.pairs(_n_rows(X))

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return comb(self.n_groups, self.n_test_groups)
