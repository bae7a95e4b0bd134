"""The durable prediction log: every served prediction, joined to its label whenever the label arrives.

Labels for credit models arrive days to months after the prediction, and the rollout must credit them to the
*version* that answered, across restarts of the app, its router replicas and its state actor. So predictions
go to a database (SQLAlchemy: a sqlite file in WAL mode by default, any SQLAlchemy URL for a database shared
by a cluster), written in batches off the request path, and the join happens there:

- table ``predictions``: one row per (request id, variant that answered: the served one and a shadow), with
  the app, version, time, sticky key and the model's outputs as JSON (class probabilities for a classifier,
  quantiles for a forecaster);
- table ``labels``: one row per labelled request id (unique: a second label is refused by the database
  itself, so concurrent router replicas cannot double count), with the per-row proper score of every variant
  that answered, computed at join time, and an increasing ``seq`` the state actor reads from
  (:meth:`PredictionLog.scores_since`); its saved cursor makes the test's sums exact across actor restarts;
- table ``served``: one row per answered request: the feature rows the answer was computed on (exact, as
  :func:`features_json` packs them), the app, model, answering variant and time. A retrain joins them to
  ``labels`` by request id (labels arrive months late, so the features must live as long as the prediction: the
  same retention prunes both), and the drift check reads the newest of them with their answers;
- table ``meta``: ``pruned_before``, the newest prediction time retention removed;
- table ``online``: per (app, version) of a forecaster served with online intervals
  (:mod:`hpm_ray.serving.online`), its calibration, trackers and the count of labelled requests they learnt from.
  A label moves the trackers in the transaction that stores it: the trackers and the ``labels`` table never
  disagree, whatever crashes (the state actor's saved state would lag the log by up to a second, and its
  cursor would replay labels into a state saved before them), and a second label is refused before it moves
  anything.

A log written before ``served`` existed opens as it is: the table is created when missing. Feature rows written
before the packed form (JSON rows only) read as they are: :func:`features_of` reads both forms.

Request ids begin with their creation time (:func:`new_request_id`), so a label for a pruned prediction is
told apart from one for an id that never existed: ``expired`` (422) versus ``unknown`` (404).
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from hpm_ray.config import Spec
from hpm_ray.metrics import brier_rows, log_loss_rows, pinball_rows
from hpm_ray.serving import online as online_pid

URL_ENV = "HPM_RAY_PREDICTION_LOG"  # a SQLAlchemy URL: a database shared by every node of a cluster
_CHUNK = 500  # ids per IN (...) query: well under every database's bound-parameter limit


class PredLogSpec(Spec):
    """``prediction_log`` in ``serve/ab.yaml``."""

    url: str | None = None  # SQLAlchemy URL; default $HPM_RAY_PREDICTION_LOG, else predictions.sqlite by the state db
    max_age_days: float | None = Field(400.0, gt=0)  # predictions older than this are dropped (labels: 422 expired)
    max_rows: int | None = Field(5_000_000, ge=1)  # and only the newest this many are kept
    flush_s: float = Field(0.2, gt=0)  # a router writes its buffered predictions this often


def default_url(state_db: str | os.PathLike) -> str:
    """``$HPM_RAY_PREDICTION_LOG`` if set, else a sqlite file next to the A/B state store."""
    return os.environ.get(URL_ENV) or f"sqlite:///{Path(state_db).resolve().parent / 'predictions.sqlite'}"


def new_request_id(now: float | None = None) -> str:
    """32 hex digits: milliseconds since the epoch (12) then 80 random bits, so the id tells its own age."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:012x}{secrets.token_hex(10)}"


def request_time(request_id: str) -> float | None:
    """When :func:`new_request_id` made ``request_id`` (seconds), or ``None`` for an id it did not make."""
    if len(request_id) != 32:
        return None
    try:
        return int(request_id[:12], 16) / 1000.0
    except ValueError:
        return None


# --- what a model answered, and its score once labelled -------------------------------------------------


def outputs_of(out: pd.DataFrame) -> dict | None:
    """The part of a model's answer a proper score needs: ``{"classes", "proba"}`` for a classifier
    (``proba_<class>`` columns), ``{"quantiles", "values"}`` for a forecaster (``q_<tau>`` columns), else None."""
    proba = [c for c in out.columns if str(c).startswith("proba_")]
    if proba:
        return {"classes": [str(c)[6:] for c in proba], "proba": _rows_of(out, proba)}
    qs = []
    for c in out.columns:
        if str(c).startswith("q_"):
            try:
                qs.append((float(str(c)[2:]), c))
            except ValueError:
                continue
    if qs:
        return {"quantiles": [q for q, _ in qs], "values": _rows_of(out, [c for _, c in qs])}
    return None


def _rows_of(out: pd.DataFrame, columns: list) -> list[list[float]]:
    """Rows of ``columns`` as float lists, stacked column by column: ``out[columns]`` builds a new frame first,
    ~0.5 ms per request on the router's hot path whatever the row count."""
    return np.column_stack([out[c].to_numpy(dtype=float) for c in columns]).tolist()


class InvalidLabel(ValueError):
    """A label that cannot score this prediction (not one of the model's classes, not a number, wrong count)."""


def _label_key(x) -> str:
    """Labels from JSON and class names compare equal across int/float/str spellings (1, 1.0, "1")."""
    if isinstance(x, bool):
        return str(int(x))
    try:
        f = float(x)
    except (TypeError, ValueError, OverflowError):
        return str(x)
    return str(int(f)) if f.is_integer() else repr(f)


def score_rows(outputs: dict, labels: list, score: str = "log_loss") -> np.ndarray:
    """Per-row proper score (lower is better) of one logged answer: log loss (or Brier, ``score="brier"``) for a
    classifier, mean pinball loss over the quantiles for a forecaster; :class:`InvalidLabel` if a label cannot
    be scored.

    Examples
    --------
    >>> out = {"classes": ["0", "1"], "proba": [[0.8, 0.2], [0.4, 0.6]]}
    >>> [round(float(s), 4) for s in score_rows(out, [0, "1"])]
    [0.2231, 0.5108]
    """
    rows = outputs.get("proba", outputs.get("values", []))
    if len(labels) != len(rows):
        raise InvalidLabel(f"the request had {len(rows)} rows; got {len(labels)} labels")
    if "classes" in outputs:
        codes = {_label_key(c): i for i, c in enumerate(outputs["classes"])}
        y = []
        for v in labels:
            if v is None or isinstance(v, (list, dict)) or _label_key(v) not in codes:
                raise InvalidLabel(f"label {str(v)[:40]!r} is not one of the model's classes {outputs['classes']}")
            y.append(codes[_label_key(v)])
        fn = brier_rows if score == "brier" else log_loss_rows
        return fn(np.asarray(y), np.asarray(outputs["proba"], dtype=float))
    y = []
    for v in labels:
        try:
            f = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
        except OverflowError:
            f = math.nan
        if not math.isfinite(f):
            raise InvalidLabel(f"label {str(v)[:40]!r} is not a finite number (the model forecasts quantiles)")
        y.append(f)
    return pinball_rows(np.asarray(y), np.asarray(outputs["values"], dtype=float), outputs["quantiles"])


# --- typed records --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    """One variant's answer to one request."""

    request_id: str
    app: str
    variant: str  # champion | challenger | shadow
    version: str
    outputs: dict  # :func:`outputs_of`
    time: float = field(default_factory=time.time)
    sticky_key: str | None = None
    model: str = ""  # the registered model's name: the drift loop reads the served rows of one model
    # the rows this answer was computed on: set on the answer the client got (not on a shadow's), they go to
    # ``served`` in the same transaction as the prediction, encoded off the request path (in ``append``)
    features: pd.DataFrame | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Label:
    request_id: str
    labels: list  # one per row of the request


@dataclass(frozen=True)
class Scored:
    """Per-row scores of one variant's answer to a labelled request."""

    variant: str
    version: str
    time: float  # of the prediction
    scores: tuple[float, ...]


Outcome = Literal["joined", "unknown", "expired", "duplicate", "invalid", "early"]
STATUS: dict[str, int] = {
    "joined": 200,
    "unknown": 404,
    "expired": 422,
    "duplicate": 409,
    "invalid": 422,
    "early": 425,  # Too Early: a forecast's realised value before its horizon has passed
}


@dataclass(frozen=True)
class JoinResult:
    request_id: str
    outcome: Outcome
    reason: str = ""
    scored: tuple[Scored, ...] = ()

    @property
    def status(self) -> int:
        return STATUS[self.outcome]


def features_json(frame: pd.DataFrame) -> str:
    """A feature frame as the ``served`` table stores it (JSON text), exactly: :func:`features_of` gives back every
    value bit for bit, missing ones as missing.

    A frame of one numeric dtype (the parser's usual output: all float, or all integer for an integer schema) is
    ``{"columns", "dtype", "shape", "zlib"}``: its column-major bytes, zlib-compressed (level 1), in base64; every
    other frame is ``{"columns", "data"}``, rows of JSON values, floats as ``repr`` (pandas' ``to_json`` keeps 10
    decimal places: 3.3e-12 would come back as 0), missing values as null, NumPy scalars as Python ones. The
    router's process encodes every answered request (``served_fraction: 1``): per-cell JSON of 100 rows of 23
    floats took about as much CPU as the model call and is 37 KB to write; packed, the same rows are 5-7 KB.

    Examples
    --------
    >>> features_json(pd.DataFrame({"v": [3.3e-12, np.nan], "town": ["a", None]}))
    '{"columns": ["v", "town"], "data": [[3.3e-12, "a"], [null, null]]}'
    >>> features_of(features_json(pd.DataFrame({"v": [3.3e-12, np.nan], "n": [0.1, 2.0]})))
    (['v', 'n'], [[3.3e-12, 0.1], [nan, 2.0]])
    """
    columns = [str(c) for c in frame.columns.tolist()]
    dtypes = set(frame.dtypes.tolist())
    one = next(iter(dtypes)) if len(dtypes) == 1 else None
    if isinstance(one, np.dtype) and one.kind in _PACKED:
        values = frame.to_numpy()  # pandas holds one block column-major: its bytes in that order
        packed = base64.b64encode(zlib.compress(values.tobytes(order="F"), 1)).decode("ascii")
        return json.dumps({"columns": columns, "dtype": values.dtype.str, "shape": values.shape, "zlib": packed})
    values = frame.to_numpy(dtype=object)  # one call for the frame: per column, pandas costs ~50 us a column
    missing = pd.isna(values)
    if missing.any():
        values = np.where(missing, None, values)
    return json.dumps({"columns": columns, "data": values.tolist()}, default=str)


_PACKED = "biuf"  # NumPy kinds stored as bytes: bool, signed and unsigned integers, floats


def features_of(text: str) -> tuple[list[str], list[list]]:
    """The column names and rows (Python values) of a stored feature frame, either form of :func:`features_json`
    (a log written before the packed form existed holds only ``{"columns", "data"}``)."""
    data = json.loads(text)
    if "zlib" not in data:
        return data["columns"], data["data"]
    dtype = np.dtype(data["dtype"])
    if dtype.kind not in _PACKED:
        raise ValueError(f"served features: dtype {data['dtype']!r} is not a packed numeric dtype")
    values = np.frombuffer(zlib.decompress(base64.b64decode(data["zlib"])), dtype=dtype)
    return data["columns"], values.reshape(data["shape"], order="F").tolist()


def _served_request(r, **extra) -> ServedRequest:
    """A ``served`` row (joined with its answer or its label) as the drift loop reads it."""
    columns, rows = features_of(r.features)
    return ServedRequest(r.request_id, r.model, r.variant, r.time, columns, rows, **extra)


@dataclass(frozen=True)
class ServedRequest:
    """An answered request as the drift loop reads it: its feature rows (``columns``, ``rows``:
    :func:`features_of`) with the answer (window reads) or the labels (labelled reads)."""

    request_id: str
    model: str
    variant: str
    time: float
    columns: list[str]
    rows: list[list]
    version: str | None = None
    outputs: dict | None = None  # :func:`outputs_of`
    labels: list | None = None  # one per row


@dataclass(frozen=True)
class LabelledRequest:
    """A row of ``labels`` as the state actor reads it: ``seq`` orders them, ``scored`` per variant."""

    seq: int
    request_id: str
    scored: tuple[Scored, ...]


# --- the store ------------------------------------------------------------------------------------------


class PredictionLog:
    """The log behind one SQLAlchemy engine; every method is one short transaction, safe across processes."""

    def __init__(self, url: str, max_age_days: float | None = None, max_rows: int | None = None):
        import sqlalchemy as sa

        self.url = url
        self.max_age_s = None if max_age_days is None else max_age_days * 86400.0
        self.max_rows = max_rows
        sqlite = url.startswith("sqlite")
        if sqlite and ":memory:" not in url and url.startswith("sqlite:///"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, connect_args={"timeout": 30} if sqlite else {})
        if sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        md = sa.MetaData()
        self.predictions = sa.Table(
            "predictions",
            md,
            sa.Column("request_id", sa.String(64), primary_key=True),
            sa.Column("variant", sa.String(16), primary_key=True),
            sa.Column("app", sa.String(128), nullable=False),
            sa.Column("version", sa.String(64), nullable=False),
            sa.Column("time", sa.Float, nullable=False, index=True),
            sa.Column("sticky_key", sa.String(256)),
            sa.Column("outputs", sa.Text, nullable=False),
        )
        self.labels = sa.Table(
            "labels",
            md,
            sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("request_id", sa.String(64), nullable=False, unique=True),
            sa.Column("app", sa.String(128), nullable=False, index=True),
            sa.Column("predicted", sa.Float, nullable=False, index=True),  # time of the prediction: retention
            sa.Column("time", sa.Float, nullable=False),
            sa.Column("label", sa.Text, nullable=False),
            sa.Column("scored", sa.Text, nullable=False),
        )
        self.served = sa.Table(
            "served",
            md,
            sa.Column("request_id", sa.String(64), primary_key=True),
            sa.Column("app", sa.String(128), nullable=False),
            sa.Column("model", sa.String(256), nullable=False),
            sa.Column("variant", sa.String(16), nullable=False),
            sa.Column("time", sa.Float, nullable=False),
            sa.Column("features", sa.Text, nullable=False),  # {"columns": [...], "data": [[...], ...]}
            sa.Index("ix_served_app_time", "app", "time"),
        )
        self.meta = sa.Table(
            "meta", md, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Float, nullable=False)
        )
        self.online = sa.Table(
            "online",
            md,
            sa.Column("app", sa.String(128), primary_key=True),
            sa.Column("version", sa.String(64), primary_key=True),
            sa.Column("calibration", sa.Text, nullable=False),  # OnlineCalibration.to_dict()
            sa.Column("state", sa.Text, nullable=False),  # serving.online.state_to_json
            sa.Column("labels", sa.Integer, nullable=False),  # labelled requests the trackers learnt from
            sa.Column("time", sa.Float, nullable=False),  # of the last change
        )
        md.create_all(self.engine)  # only the tables missing: a log from before ``served`` or ``online`` gains it here

    # -- writes ------------------------------------------------------------------------------------------
    def append(self, records: list[Prediction]) -> int:
        """Write a batch of predictions, and the feature rows of those that carry them, in one transaction;
        returns how many predictions."""
        if not records:
            return 0
        served = [
            {
                "request_id": r.request_id,
                "app": r.app,
                "model": r.model,
                "variant": r.variant,
                "time": float(r.time),
                "features": features_json(r.features),
            }
            for r in records
            if r.features is not None
        ]
        rows = [
            {
                "request_id": r.request_id,
                "variant": r.variant,
                "app": r.app,
                "version": str(r.version),
                "time": float(r.time),
                "sticky_key": r.sticky_key,
                "outputs": json.dumps(r.outputs),
            }
            for r in records
        ]
        with self.engine.begin() as conn:
            conn.execute(self.predictions.insert(), rows)
            if served:
                conn.execute(self.served.insert(), served)
        return len(rows)

    def join(self, labels: list[Label], score: str = "log_loss", now: float | None = None) -> list[JoinResult]:
        """Join labels to their predictions; one result per label, in order.

        ``joined`` (the label and every answering variant's per-row scores are stored), ``unknown`` (no such
        request id), ``expired`` (its prediction was removed by retention), ``duplicate`` (already labelled, or
        twice in this batch: refused, never counted twice), ``invalid`` (wrong count, or not one of the model's
        classes). A concurrent join of the same id by another process is caught by the unique constraint and
        the batch retried, so it comes back ``duplicate`` here.
        """
        from sqlalchemy.exc import IntegrityError

        for _ in range(5):
            try:
                return self._join_once(labels, score, time.time() if now is None else now)
            except IntegrityError:  # another replica labelled one of these ids meanwhile: look again
                continue
        raise RuntimeError("prediction log: labels kept colliding with concurrent writers")

    def _join_once(self, labels: list[Label], score: str, now: float) -> list[JoinResult]:
        import sqlalchemy as sa

        ids = list(dict.fromkeys(lb.request_id for lb in labels))
        with self.engine.begin() as conn:
            answers: dict[str, list] = {}
            taken: set[str] = set()
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                for row in conn.execute(
                    sa.select(
                        self.predictions.c.request_id,
                        self.predictions.c.app,
                        self.predictions.c.variant,
                        self.predictions.c.version,
                        self.predictions.c.time,
                        self.predictions.c.outputs,
                    ).where(self.predictions.c.request_id.in_(part))
                ):
                    answers.setdefault(row.request_id, []).append(row)
                taken.update(
                    conn.execute(
                        sa.select(self.labels.c.request_id).where(self.labels.c.request_id.in_(part))
                    ).scalars()
                )
            pruned = self._pruned_before(conn)
            results, new_rows = [], []
            for lb in labels:
                r = self._one(lb, answers.get(lb.request_id), taken, score, now, pruned)
                results.append(r)
                if r.outcome == "joined":
                    taken.add(lb.request_id)
                    first = answers[lb.request_id][0]
                    new_rows.append(
                        {
                            "request_id": lb.request_id,
                            "app": first.app,
                            "predicted": min(s.time for s in r.scored),
                            "time": now,
                            "label": json.dumps(lb.labels),
                            "scored": json.dumps([[s.variant, s.version, s.time, list(s.scores)] for s in r.scored]),
                        }
                    )
            if new_rows:
                conn.execute(self.labels.insert(), new_rows)
                joined = [(lb, answers[lb.request_id]) for lb, r in zip(labels, results) if r.outcome == "joined"]
                self._learn_online(conn, joined, now)
        return results

    def _learn_online(self, conn, joined: list[tuple[Label, list]], now: float) -> None:
        """Move the online trackers of every version that answered a joined request with an adaptive interval
        (once per request and version, as the rollout credits scores), in the caller's transaction."""
        import sqlalchemy as sa

        todo = []
        for lb, rows in joined:
            seen = set()
            for a in rows:
                out = json.loads(a.outputs)
                if "online" in out and (a.app, a.version) not in seen:
                    seen.add((a.app, a.version))
                    todo.append(((a.app, a.version), out, lb.labels))
        t = self.online.c
        current: dict[tuple[str, str], list] = {}
        for key in dict.fromkeys(k for k, _, _ in todo):
            row = conn.execute(
                sa.select(t.calibration, t.state, t.labels)
                .where(t.app == key[0], t.version == key[1])
                .with_for_update()  # a server database: concurrent joins of one version queue here
            ).first()
            if row is not None:  # none: the version's trackers were never started (it was served without them)
                cal = online_pid.OnlineCalibration.from_dict(json.loads(row.calibration))
                current[key] = [cal, online_pid.state_from_json(json.loads(row.state)), row.labels]
        for key, out, labels in todo:
            if key in current:
                cal, state, n = current[key]
                current[key] = [cal, online_pid.learn(cal, state, out["values"], out["online"], labels), n + 1]
        for (app, version), (_, state, n) in current.items():
            conn.execute(
                self.online.update()
                .where(t.app == app, t.version == version)
                .values(state=json.dumps(online_pid.state_to_json(state)), labels=n, time=now)
            )

    def _one(self, lb: Label, answers, taken: set[str], score: str, now: float, pruned: float) -> JoinResult:
        rid = lb.request_id
        if not answers:
            born = request_time(rid)
            horizon = max(pruned, now - self.max_age_s if self.max_age_s else -math.inf)
            if born is not None and born <= horizon:
                return JoinResult(rid, "expired", f"request {rid} is older than the prediction log's retention")
            return JoinResult(rid, "unknown", f"unknown request id {rid!r} (or not written yet: retry in a second)")
        if rid in taken:
            return JoinResult(rid, "duplicate", f"request {rid} is already labelled; a second label is not counted")
        if not isinstance(lb.labels, list) or not lb.labels:
            return JoinResult(rid, "invalid", "labels must be a non-empty list")
        outputs = [json.loads(a.outputs) for a in answers]  # parsed once: the maturity check and the scores
        matures = max(a.time + out.get("matures_s", 0.0) for a, out in zip(answers, outputs))
        if now < matures:  # a value "realised" before the horizon passed cannot be the forecast's target
            return JoinResult(
                rid,
                "early",
                f"request {rid} forecasts a return that is realised at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(matures))}, "
                f"{matures - now:.0f} s from now; post its value then",
            )
        try:
            scored = tuple(
                Scored(a.variant, a.version, a.time, tuple(map(float, score_rows(out, lb.labels, score))))
                for a, out in zip(answers, outputs)
            )
        except InvalidLabel as exc:
            return JoinResult(rid, "invalid", f"request {rid}: {exc}")
        return JoinResult(rid, "joined", "", scored)

    # -- reads -------------------------------------------------------------------------------------------
    def scores_since(self, app: str, seq: int, limit: int = 10_000) -> list[LabelledRequest]:
        """Labelled requests of ``app`` with ``seq`` above the cursor, in order (at most ``limit``)."""
        import sqlalchemy as sa

        t = self.labels.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.seq, t.request_id, t.scored).where(t.app == app, t.seq > seq).order_by(t.seq).limit(limit)
            ).all()
        return [
            LabelledRequest(
                r.seq, r.request_id, tuple(Scored(v, ver, tm, tuple(s)) for v, ver, tm, s in json.loads(r.scored))
            )
            for r in rows
        ]

    def newest_served(self, app: str, rows: int) -> list[ServedRequest]:
        """The newest answered requests of ``app`` holding at least ``rows`` feature rows (all, if fewer), oldest
        first, each with the answer the client got. What a drift check reads."""
        import sqlalchemy as sa

        s, p = self.served.c, self.predictions.c
        query = (
            sa.select(s.request_id, s.model, s.variant, s.time, s.features, p.version, p.outputs)
            .join(self.predictions, (p.request_id == s.request_id) & (p.variant == s.variant))
            .where(s.app == app)
            .order_by(s.time.desc())
        )
        return self._newest(query, rows, lambda r: {"version": str(r.version), "outputs": json.loads(r.outputs)})

    def labelled_served(
        self, app: str, model: str | None = None, since: float | None = None, rows: int | None = None
    ) -> list[ServedRequest]:
        """Answered requests of ``app`` (of ``model``, answered at ``since`` or later) whose labels have arrived,
        with their feature rows and labels (one join of ``served`` and ``labels``), oldest first: the newest that
        hold at least ``rows`` feature rows (None: all). What a retrain on served traffic learns from."""
        import sqlalchemy as sa

        s, lb = self.served.c, self.labels.c
        query = (
            sa.select(s.request_id, s.model, s.variant, s.time, s.features, lb.label)
            .join(self.labels, lb.request_id == s.request_id)
            .where(s.app == app)
            .order_by(s.time.desc())
        )
        if model is not None:
            query = query.where(s.model == model)
        if since is not None:
            query = query.where(s.time >= since)
        return self._newest(query, rows, lambda r: {"labels": json.loads(r.label)})

    def _newest(self, query, rows: int | None, extra: Callable) -> list[ServedRequest]:
        """The requests of ``query`` (newest first) until they hold ``rows`` feature rows (None: all), oldest
        first; ``extra(r)``: the answer or the labels. SQL reads at most ``rows`` requests: each has a row."""
        if rows is not None:
            query = query.limit(rows)
        found, n = [], 0
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                found.append(_served_request(r, **extra(r)))
                n += len(found[-1].rows)
                if rows is not None and n >= rows:
                    break
        return found[::-1]

    def start_online(self, app: str, version: str, calibration: dict) -> tuple[dict, int]:
        """The trackers of ``version`` in ``app`` and their label count, started at the calibration's start
        quantiles the first time (a restart finds them where the last label left them)."""
        import sqlalchemy as sa
        from sqlalchemy.exc import IntegrityError

        cal = online_pid.OnlineCalibration.from_dict(calibration)
        found = self.online_states(app, [version]).get(version)
        if found is not None:
            return found
        start = online_pid.state_to_json(cal.start())
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(self.online).values(
                        app=app,
                        version=str(version),
                        calibration=json.dumps(calibration),
                        state=json.dumps(start),
                        labels=0,
                        time=time.time(),
                    )
                )
        except IntegrityError:  # another replica started them meanwhile
            return self.online_states(app, [version])[version]
        return start, 0

    def online_states(self, app: str, versions: list[str]) -> dict[str, tuple[dict, int]]:
        """Version -> (trackers as JSON, labelled requests they learnt from), for the versions that have them."""
        import sqlalchemy as sa

        if not versions:
            return {}
        t = self.online.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.version, t.state, t.labels).where(t.app == app, t.version.in_([str(v) for v in versions]))
            ).all()
        return {r.version: (json.loads(r.state), int(r.labels)) for r in rows}

    def count(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.predictions)).scalar_one())

    # -- retention -------------------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Drop predictions (and their labels and feature rows) beyond ``max_age_days`` or the newest ``max_rows``;
        returns how many predictions went. Their ids are remembered as expired through the ``pruned_before``
        watermark. A label that can still join finds its features: both go at the same cutoff."""
        import sqlalchemy as sa

        now = time.time() if now is None else now
        p = self.predictions.c
        cutoffs = []
        if self.max_age_s is not None:
            cutoffs.append(now - self.max_age_s)
        with self.engine.begin() as conn:
            if self.max_rows is not None:
                edge = conn.execute(
                    sa.select(p.time).order_by(p.time.desc()).offset(self.max_rows).limit(1)
                ).scalar_one_or_none()
                if edge is not None:
                    cutoffs.append(edge)
            if not cutoffs:
                return 0
            cutoff = max(cutoffs)
            gone = conn.execute(self.predictions.delete().where(p.time <= cutoff)).rowcount
            conn.execute(self.served.delete().where(self.served.c.time <= cutoff))  # features go with them
            if gone:
                conn.execute(self.labels.delete().where(self.labels.c.predicted <= cutoff))
                newest = max(self._pruned_before(conn), cutoff)
                conn.execute(self.meta.delete().where(self.meta.c.key == "pruned_before"))
                conn.execute(self.meta.insert().values(key="pruned_before", value=newest))
        return int(gone or 0)

    def _pruned_before(self, conn) -> float:
        import sqlalchemy as sa

        value = conn.execute(sa.select(self.meta.c.value).where(self.meta.c.key == "pruned_before")).scalar()
        return -math.inf if value is None else float(value)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL: router replicas append while the state actor and feedback readers read, without blocking each other."""
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
