"""Train / validation / test split of a classification table, with the checks the students rely on.

Validation rows drive every choice (selection, fusion weights, temperature, chain stopping); test rows are
only ever scored for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hpm_ray.errors import DataError, SpecError


@dataclass(frozen=True)
class Splits:
    X_train: pd.DataFrame
    y_train: np.ndarray  # class codes 0..k-1
    X_val: pd.DataFrame
    y_val: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    classes: np.ndarray  # original labels, index = code

    @property
    def n_classes(self) -> int:
        return len(self.classes)


# More labels than this is almost always a continuous or id column given as --target by mistake.
MAX_CLASSES = 100


def encode_target(y) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> codes 0..k-1; refuses a missing, empty or constant target."""
    s = pd.Series(np.asarray(y)) if not isinstance(y, pd.Series) else y.reset_index(drop=True)
    if len(s) == 0:
        raise DataError("the target is empty")
    if s.isna().any():
        raise DataError(f"the target has {int(s.isna().sum())} missing value(s)")
    classes, codes = np.unique(s.to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"the target is constant (every value is {classes[0]}): nothing to distil")
    if pd.api.types.is_float_dtype(s) and not np.all(np.mod(classes, 1) == 0):
        raise DataError(
            f"the target has {len(classes)} distinct non-integer values: it looks continuous, and "
            "distillation needs class labels"
        )
    if len(classes) > MAX_CLASSES:
        raise DataError(
            f"the target has {len(classes)} classes (at most {MAX_CLASSES}): is it an id or a continuous column?"
        )
    return codes.astype(int), classes


def make_splits(
    X: pd.DataFrame,
    y,
    validation_size: float,
    test_size: float,
    seed: int,
    max_rows: int | None = None,
    test_rows=None,
) -> Splits:
    """Stratified train / validation / test splits (after a stratified subsample to ``max_rows``).

    ``test_rows``: positions of the rows that form the test split, chosen by the caller (a drift retrain holds out
    served rows: the gates and the new version's drift reference must see the traffic it is trained for); the
    other rows are split into train and validation in the usual proportions. Not with ``max_rows``.
    """
    if not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(np.asarray(X), columns=[f"x{i}" for i in range(np.asarray(X).shape[1])])
    X = X.reset_index(drop=True)
    codes, classes = encode_target(y)
    if len(codes) != len(X):
        raise DataError(f"X has {len(X)} rows but y has {len(codes)}")
    idx = np.arange(len(X))
    if test_rows is not None and max_rows is not None:
        raise SpecError("make_splits: give test_rows or max_rows, not both")
    if max_rows is not None and max_rows < len(X):
        idx, _ = train_test_split(idx, train_size=max_rows, stratify=codes, random_state=seed)
    try:
        if test_rows is None:
            rest, test = train_test_split(idx, test_size=test_size, stratify=codes[idx], random_state=seed)
        else:
            test = np.unique(np.asarray(test_rows, dtype=int))
            rest = np.setdiff1d(idx, test)
        train, val = train_test_split(
            rest, test_size=validation_size / (1 - test_size), stratify=codes[rest], random_state=seed
        )
    except ValueError as exc:
        raise DataError(f"cannot split the data into train/validation/test with every class present: {exc}") from None
    parts = {"train": train, "validation": val, "test": test}
    for name, rows in parts.items():
        present = np.unique(codes[rows])
        if len(present) < 2:
            raise DataError(f"the {name} split has one class only ({classes[present[0]]}); give more rows per class")
    return Splits(
        X.iloc[train].reset_index(drop=True),
        codes[train],
        X.iloc[val].reset_index(drop=True),
        codes[val],
        X.iloc[test].reset_index(drop=True),
        codes[test],
        classes,
    )
