"""Served rows for the drift monitor: sampled by the A/B router, appended to rotating JSON-lines files.

Each router replica writes its own files (``<writer>-<seq>.jsonl``, ``file_rows`` rows each) into one
folder per app; after each rotation the folder is pruned to its newest ``max_files`` files, so the log is
bounded whatever the traffic. A row holds the request's features, the model's outputs (``out.<column>``)
and who answered (``_variant``, ``_version``, ``_model``, ``_time``), with the request id and the row's index
in the request (``_request_id``, ``_row``), so a retrain can join each row to its late label in the prediction
log (:meth:`hpm_ray.serving.predlog.PredictionLog.labels_for`).
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hpm_ray.errors import DataError

OUT_PREFIX = "out."
META = ("_time", "_model", "_variant", "_version", "_request_id", "_row")


def served_dir(app: str, base: str | Path | None = None) -> Path:
    from hpm_ray.runtime import runs_dir

    return Path(base) if base else runs_dir() / "served" / app


class ServedLog:
    """Buffers sampled rows in memory (``add``) and appends them to disk on ``flush`` (off the request path)."""

    def __init__(
        self,
        directory: str | Path,
        fraction: float = 1.0,
        file_rows: int = 5000,
        max_files: int = 10,
        seed: int | None = None,
    ):
        if not 0 <= fraction <= 1 or file_rows < 1 or max_files < 1:
            raise ValueError("served log: fraction in [0, 1], file_rows >= 1, max_files >= 1")
        self.dir = Path(directory)
        self.fraction = fraction
        self.file_rows = file_rows
        self.max_files = max_files
        self.writer = uuid.uuid4().hex[:8]
        self.seq = 0
        self.rows_in_file = 0
        self.pending: list[tuple] = []
        self._rng = random.Random(seed)

    def add(
        self,
        model: str,
        variant: str,
        version: str,
        frame: pd.DataFrame,
        out: pd.DataFrame,
        request_id: str | None = None,
    ) -> None:
        """O(1) on the request path: keep references; the frames are assembled in :meth:`flush`."""
        if self.fraction < 1 and self._rng.random() >= self.fraction:
            return
        self.pending.append((frame, out, time.time(), model, variant, str(version), request_id))

    def _path(self) -> Path:
        return self.dir / f"{self.writer}-{self.seq:06d}.jsonl"

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        df = pd.concat(
            [
                pd.concat([p[0] for p in pending], ignore_index=True),
                pd.concat([p[1] for p in pending], ignore_index=True).add_prefix(OUT_PREFIX),
            ],
            axis=1,
        )
        for i, col in enumerate(META[:-1], start=2):
            df[col] = [v for p in pending for v in [p[i]] * len(p[0])]
        df["_row"] = [r for p in pending for r in range(len(p[0]))]
        self.dir.mkdir(parents=True, exist_ok=True)
        while len(df):
            chunk, df = df.iloc[: self.file_rows - self.rows_in_file], df.iloc[self.file_rows - self.rows_in_file :]
            text = chunk.to_json(orient="records", lines=True)
            with open(self._path(), "a") as f:
                f.write(text if text.endswith("\n") else text + "\n")
            self.rows_in_file += len(chunk)
            if self.rows_in_file >= self.file_rows:
                self.seq, self.rows_in_file = self.seq + 1, 0
                self._prune()

    def _prune(self) -> None:
        files = sorted(self.dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        for old in files[: max(0, len(files) - self.max_files)]:
            old.unlink(missing_ok=True)


@dataclass(frozen=True)
class ServedWindow:
    features: pd.DataFrame
    outputs: pd.DataFrame
    meta: pd.DataFrame  # _time, _model, _variant, _version, _request_id, _row (the last two: logs since issue 18)


def read_window(directory: str | Path, n: int) -> ServedWindow:
    """The newest ``n`` served rows (all writers), oldest first; no log at all is a DataError."""
    d = Path(directory)
    files = sorted(d.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True) if d.is_dir() else []
    if not files:
        raise DataError(f"no served rows in {d} (is the A/B app serving traffic with logging on?)")
    parts, total = [], 0
    for f in files:
        try:
            part = pd.read_json(f, lines=True, dtype=False)
        except ValueError:  # a file being pruned or half-written by another replica: skip it
            continue
        if "_time" not in part.columns:  # not a served-rows log (or an empty file): not ours to read
            continue
        parts.append(part)
        total += len(part)
        if total >= n:
            break
    if not parts:
        raise DataError(f"no readable served rows in {d}: its .jsonl files are unreadable or lack the '_time' column")
    # oldest file first, so rows of one request split across a rotation keep their order under the stable sort
    df = pd.concat(parts[::-1], ignore_index=True).sort_values("_time", kind="stable").tail(n).reset_index(drop=True)
    out_cols = [c for c in df.columns if c.startswith(OUT_PREFIX)]
    features = df.drop(columns=out_cols + [c for c in META if c in df.columns])
    outputs = df[out_cols].rename(columns=lambda c: c[len(OUT_PREFIX) :])
    return ServedWindow(features, outputs, df[[c for c in META if c in df.columns]].astype({"_version": str}))
