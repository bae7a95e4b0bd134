"""What a retrain after drift learns from: the served rows whose labels have arrived (joined to the prediction
log by request id and row), from the last ``days``, plus a sample of the reference training table.

Retraining on the static table alone cannot learn the drift that triggered it; retraining on the labelled
window alone forgets whatever the window does not show (one subpopulation, one season). So both, windowed:
every fresh labelled row of the window, and ``reference_rows`` rows of the table. The window must be worth
learning from: enough labelled rows, both classes, and the champion's columns, else a one-line DataError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpm_ray.errors import DataError
from hpm_ray.serving.served import ServedWindow


@dataclass(frozen=True)
class RetrainData:
    X: pd.DataFrame  # the champion's columns, in its order: served rows first, then reference rows
    y: np.ndarray
    request_ids: tuple[str, ...]  # served requests whose labelled rows are in X (recorded in the MLflow run)
    n_served: int  # labelled served rows in X
    n_reference: int  # reference rows in X


def join_served_labels(window: ServedWindow, labels: dict[str, list]) -> tuple[pd.DataFrame, list, list[str]]:
    """Rows of ``window`` that have a label in ``labels`` (request id -> one label per row): features, labels
    and each row's request id, in served order."""
    if "_request_id" not in window.meta.columns or "_row" not in window.meta.columns:
        return window.features.iloc[:0], [], []
    rids = window.meta["_request_id"].tolist()
    rows = window.meta["_row"].tolist()
    keep = [
        i
        for i, (rid, r) in enumerate(zip(rids, rows))
        if isinstance(rid, str) and rid in labels and pd.notna(r) and int(r) < len(labels[rid])
    ]
    y = [labels[rids[i]][int(rows[i])] for i in keep]
    return window.features.iloc[keep].reset_index(drop=True), y, [rids[i] for i in keep]


def _same_columns(have: list[str], want: list[str], what: str) -> None:
    missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
    if missing or extra:
        parts = [f"lacks {', '.join(map(repr, missing[:5]))}" if missing else "", f"adds {', '.join(extra[:5])}"]
        raise DataError(f"{what} has other columns than the champion's schema: {'; '.join(p for p in parts if p)}")


def retrain_data(
    window: ServedWindow,
    labels: dict[str, list],
    columns: list[str],
    reference: tuple[pd.DataFrame, np.ndarray] | None,
    min_labels: int,
    reference_rows: int = 2000,
    seed: int = 0,
) -> RetrainData:
    """The labelled rows of ``window`` plus up to ``reference_rows`` random rows of ``reference``; DataError when
    fewer than ``min_labels`` served rows are labelled, they hold one class only, or a source's columns differ
    from the champion's ``columns``.

    Examples
    --------
    >>> import pandas as pd
    >>> from hpm_ray.serving.served import ServedWindow
    >>> w = ServedWindow(pd.DataFrame({"a": [1, 2, 3]}), pd.DataFrame(),
    ...                  pd.DataFrame({"_request_id": ["r1", "r1", "r2"], "_row": [0, 1, 0]}))
    >>> d = retrain_data(w, {"r1": [0, 1]}, ["a"], None, min_labels=2)
    >>> d.X["a"].tolist(), d.y.tolist(), d.request_ids
    ([1, 2], [0, 1], ('r1',))
    """
    _same_columns(list(window.features.columns), columns, "the served window")
    X, y, rids = join_served_labels(window, labels)
    if len(y) < min_labels:
        raise DataError(
            f"only {len(y)} served row(s) have labels; retraining needs {min_labels} "
            "(post labels with POST /feedback or hpm-ray ab feedback --file)"
        )
    if len({str(v) for v in y}) < 2:
        raise DataError(f"the {len(y)} labelled served rows hold one class only ({y[0]!r}); nothing to learn from")
    y_served = np.asarray(y)
    n_ref = 0
    parts, ys = [X[columns]], [y_served]
    if reference is not None and reference_rows > 0:
        Xr, yr = reference
        _same_columns(list(Xr.columns), columns, "the reference training data")
        yr = np.asarray(yr)
        try:
            ys[0] = y_served.astype(yr.dtype)
        except (TypeError, ValueError):
            raise DataError(f"served labels such as {y[0]!r} do not match the reference labels' type {yr.dtype}")
        take = np.random.default_rng(seed).permutation(len(Xr))[:reference_rows]
        parts.append(Xr.iloc[take][columns])
        ys.append(yr[take])
        n_ref = len(take)
    return RetrainData(
        pd.concat(parts, ignore_index=True),
        np.concatenate(ys),
        tuple(dict.fromkeys(rids)),
        len(y),
        n_ref,
    )
