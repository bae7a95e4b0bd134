"""Served rows as the drift loop reads them from the prediction log (:mod:`hpm_ray.serving.predlog`).

The router logs the feature rows of each answered request with its prediction (table ``served``), so one
store, under one retention, holds what the drift check compares (the newest rows, with the answers) and what a
retrain learns from (rows joined to their late labels). A row is named ``<request id>:<row index>``: that is
how a retrain records which served rows it used.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hpm_ray.errors import DataError
from hpm_ray.serving.predlog import PredictionLog, ServedRequest


@dataclass(frozen=True)
class ServedWindow:
    features: pd.DataFrame
    outputs: pd.DataFrame  # the answers: ``proba_<class>`` (classifiers) or ``q_<tau>`` (forecasters) columns
    meta: pd.DataFrame  # _time, _model, _variant, _version, _request_id, _row


@dataclass(frozen=True)
class LabelledRows:
    """Served rows whose labels arrived, oldest first: features, one label each, and each row's id."""

    features: pd.DataFrame
    labels: list
    ids: tuple[str, ...]  # "<request id>:<row>"


def row_id(request_id: str, row: int) -> str:
    return f"{request_id}:{row}"


def _features(requests: list[ServedRequest]) -> pd.DataFrame:
    """One frame of every request's rows, in order. Requests of one schema (the usual case) are built in one go;
    after a schema change, frames are aligned by column name (cells a request lacks: NaN)."""
    if len({tuple(r.columns) for r in requests}) <= 1:
        columns = requests[0].columns if requests else []
        return pd.DataFrame([row for r in requests for row in r.rows], columns=columns)
    return pd.concat([pd.DataFrame(r.rows, columns=r.columns) for r in requests], ignore_index=True)


def _names(outputs: dict) -> list[str]:
    if "proba" in outputs:
        return [f"proba_{c}" for c in outputs["classes"]]
    return [f"q_{q:g}" for q in outputs["quantiles"]]


def _outputs(requests: list[ServedRequest]) -> pd.DataFrame:
    """The answers row for row (:func:`~hpm_ray.serving.predlog.outputs_of` decoded), as :func:`_features`."""
    values = lambda out: out["proba"] if "proba" in out else out["values"]
    if len({tuple(_names(r.outputs)) for r in requests}) == 1:
        return pd.DataFrame([v for r in requests for v in values(r.outputs)], columns=_names(requests[0].outputs))
    return pd.concat([pd.DataFrame(values(r.outputs), columns=_names(r.outputs)) for r in requests], ignore_index=True)


def read_window(log: PredictionLog, app: str, n: int) -> ServedWindow:
    """The newest ``n`` served rows of ``app`` (all router replicas), oldest first; none at all is a DataError."""
    requests = log.newest_served(app, n)
    if not requests:
        raise DataError(
            f"no served rows of app {app!r} in the prediction log {log.url} "
            "(is the A/B app serving traffic with served_log on, and writing to this log?)"
        )
    meta = pd.DataFrame(
        {
            "_time": [r.time for r in requests for _ in r.rows],
            "_model": [r.model for r in requests for _ in r.rows],
            "_variant": [r.variant for r in requests for _ in r.rows],
            "_version": [str(r.version) for r in requests for _ in r.rows],
            "_request_id": [r.request_id for r in requests for _ in r.rows],
            "_row": [i for r in requests for i in range(len(r.rows))],
        }
    )
    keep = slice(max(0, len(meta) - n), None)
    return ServedWindow(
        _features(requests).iloc[keep].reset_index(drop=True),
        _outputs(requests).iloc[keep].reset_index(drop=True),
        meta.iloc[keep].reset_index(drop=True),
    )


def labelled_rows(
    log: PredictionLog, app: str, model: str | None = None, since: float | None = None, rows: int | None = None
) -> LabelledRows:
    """The served rows of ``app`` (of ``model``, from ``since``) joined to their labels, oldest first: the newest
    requests holding at least ``rows`` rows (None: all), read so in SQL. A request whose label count differs from
    its rows is skipped (the join refuses such labels; an old log may hold one)."""
    requests = [r for r in log.labelled_served(app, model, since, rows) if len(r.labels or ()) == len(r.rows)]
    if not requests and model is not None:  # say where the labels went, if anywhere: a retrain refuses on this
        others = sorted({r.model for r in log.labelled_served(app, None, since, rows)} - {model})
        if others:
            raise DataError(
                f"the labelled served rows of app {app!r} belong to other model(s) {others}, none to {model!r}"
            )
    return LabelledRows(
        _features(requests),
        [v for r in requests for v in r.labels],
        tuple(row_id(r.request_id, i) for r in requests for i in range(len(r.rows))),
    )
