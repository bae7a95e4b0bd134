"""What a retrain after drift learns from, and what it is judged on.

Retraining on the static table alone cannot learn the drift that triggered it; retraining on the labelled
window alone forgets whatever the window does not show (one subpopulation, one season). So both: the served rows
whose labels arrived (joined in the prediction log), the newest first when ``max_rows`` is short, plus
``reference_rows`` rows of the reference table. A stratified ``test_size`` share of the *served* rows is held
out: the fit never sees it, the gates read the new version's metrics on it, and it becomes the version's drift
reference. Held-out table rows would make that reference the old population, and the new champion would keep
alarming on the very traffic it was trained for. The window must be worth learning from: enough labelled rows,
both classes, and the champion's columns, else a one-line DataError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hpm_ray.errors import DataError
from hpm_ray.serving.served import LabelledRows


@dataclass(frozen=True)
class RetrainData:
    """``X[:n_fit]`` is what the fit uses (served rows, then reference rows); ``X[n_fit:]`` the held-out block
    (served rows, or table rows for a retrain on the table alone) the gates read and the drift reference."""

    X: pd.DataFrame  # the champion's columns, in its order
    y: np.ndarray
    n_fit: int
    fit_ids: tuple[str, ...] = ()  # the served rows the fit used, "<request id>:<row>" (recorded in the MLflow run)
    held_out_ids: tuple[str, ...] = ()  # the served rows held out for the gates and the drift reference
    n_reference: int = 0  # reference table rows in the fit (all of it, for a retrain on the table alone)

    @property
    def held_out_rows(self) -> np.ndarray:
        """Positions of the held-out block in ``X``."""
        return np.arange(self.n_fit, len(self.X))

    def fit(self) -> tuple[pd.DataFrame, np.ndarray]:
        return self.X.iloc[: self.n_fit].reset_index(drop=True), self.y[: self.n_fit]

    def held_out(self) -> tuple[pd.DataFrame, np.ndarray]:
        return self.X.iloc[self.n_fit :].reset_index(drop=True), self.y[self.n_fit :]


def _same_columns(have: list[str], want: list[str], what: str) -> None:
    missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
    if missing or extra:
        parts = [f"lacks {', '.join(map(repr, missing[:5]))}" if missing else "", f"adds {', '.join(extra[:5])}"]
        raise DataError(f"{what} has other columns than the champion's schema: {'; '.join(p for p in parts if p)}")


def _hold_out(y: np.ndarray, test_size: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fit and held-out rows (stratified, each in its original order)."""
    try:
        fit, held = train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed)
    except ValueError as exc:
        raise DataError(f"cannot hold out a stratified {test_size:.0%} of {what}: {exc}") from None
    return np.sort(fit), np.sort(held)


def retrain_data(
    rows: LabelledRows,
    columns: list[str],
    reference: tuple[pd.DataFrame, np.ndarray] | None,
    min_labels: int,
    reference_rows: int = 2000,
    max_rows: int | None = None,
    test_size: float = 0.2,
    seed: int = 0,
) -> RetrainData:
    """The labelled served ``rows`` (the newest that fit in ``max_rows`` beside the reference rows), a held-out
    ``test_size`` share of them, and up to ``reference_rows`` random rows of ``reference`` in the fit.

    DataError when fewer than ``min_labels`` served rows are labelled (or fit in ``max_rows``), the kept ones hold
    one class only, or a source's columns differ from the champion's ``columns``.

    Examples
    --------
    >>> import pandas as pd
    >>> from hpm_ray.serving.served import LabelledRows
    >>> rows = LabelledRows(pd.DataFrame({"a": range(10)}), [0, 1] * 5, tuple(f"r{i}:0" for i in range(10)))
    >>> d = retrain_data(rows, ["a"], None, min_labels=10, test_size=0.2)
    >>> d.n_fit, len(d.held_out_ids), sorted(d.fit_ids + d.held_out_ids) == sorted(rows.ids)
    (8, 2, True)
    """
    y = list(rows.labels)
    if len(y) < min_labels:
        raise DataError(
            f"only {len(y)} served row(s) have labels; retraining needs {min_labels} "
            "(post labels with POST /feedback or hpm-ray ab feedback --file)"
        )
    _same_columns(list(rows.features.columns), columns, "the labelled served data")
    y_served = np.asarray(y)
    Xr = yr = None
    n_ref = 0
    if reference is not None and reference_rows > 0:
        Xr, yr = reference
        _same_columns(list(Xr.columns), columns, "the reference training data")
        yr = np.asarray(yr)
        try:
            y_served = y_served.astype(yr.dtype)
        except (TypeError, ValueError):
            raise DataError(f"served labels such as {y[0]!r} do not match the reference labels' type {yr.dtype}")
        n_ref = min(reference_rows, len(Xr))
    budget = len(y) if max_rows is None else max_rows - n_ref
    if budget < min_labels:
        raise DataError(
            f"max_rows {max_rows} leaves room for {budget} served rows beside {n_ref} reference rows; "
            f"retraining needs {min_labels}"
        )
    keep = np.arange(max(0, len(y) - budget), len(y))  # the newest served rows (oldest first in ``rows``)
    if len({str(y[i]) for i in keep}) < 2:
        raise DataError(
            f"the {len(keep)} newest labelled served rows hold one class only ({y[keep[0]]!r}); nothing to learn from"
        )
    fit, held = _hold_out(y_served[keep], test_size, seed, f"the {len(keep)} labelled served rows")
    fit, held = keep[fit], keep[held]
    served = rows.features[columns].reset_index(drop=True)
    parts, ys = [served.iloc[fit]], [y_served[fit]]
    if n_ref:
        take = np.random.default_rng(seed).permutation(len(Xr))[:n_ref]
        parts.append(Xr.iloc[take][columns])
        ys.append(yr[take])
    parts.append(served.iloc[held])
    ys.append(y_served[held])
    ids = np.asarray(rows.ids, dtype=object)
    return RetrainData(
        pd.concat(parts, ignore_index=True),
        np.concatenate(ys),
        len(fit) + n_ref,
        tuple(ids[fit]),
        tuple(ids[held]),
        n_ref,
    )


def table_data(
    X: pd.DataFrame, y, columns: list[str], max_rows: int | None = None, test_size: float = 0.2, seed: int = 0
) -> RetrainData:
    """A retrain on the reference table alone: a stratified sample of ``max_rows`` rows, a ``test_size`` share of
    them held out."""
    _same_columns(list(X.columns), columns, "the reference training data")
    y = np.asarray(y)
    rows = np.arange(len(y))
    if max_rows is not None and max_rows < len(y):
        try:
            rows, _ = train_test_split(rows, train_size=max_rows, stratify=y, random_state=seed)
        except ValueError as exc:
            raise DataError(f"cannot sample {max_rows} rows of the reference table with every class: {exc}") from None
        rows = np.sort(rows)
    fit, held = _hold_out(y[rows], test_size, seed, f"the {len(rows)} reference table rows")
    order = np.concatenate([rows[fit], rows[held]])
    return RetrainData(X.iloc[order][columns].reset_index(drop=True), y[order], len(fit), n_reference=len(fit))
