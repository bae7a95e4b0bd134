"""Shared optimisation memory: the best hyperparameters per student type and dataset fingerprint.

A JSON file in the runs folder, written atomically by the driver. A later run on data with the same
fingerprint (same columns and dtypes, same classes, same order of magnitude of rows) enqueues the stored
parameters as the first trials of its Optuna studies.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from hpm_ray.runtime import runs_dir


def fingerprint(X: pd.DataFrame, n_classes: int) -> str:
    """Schema + class count + rows rounded to a power of two: 'similar data', not 'identical data'."""
    schema = [(str(c), pd.api.types.is_numeric_dtype(X[c])) for c in X.columns]
    raw = json.dumps({"schema": schema, "k": n_classes, "rows": round(math.log2(max(len(X), 1)))})
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class OptimizationMemory:
    def __init__(self, path: str | Path | None = None, keep: int = 3):
        self.path = Path(path) if path else runs_dir() / "distill_memory.json"
        self.keep = keep
        self._data: dict[str, list[dict[str, Any]]] = {}
        if self.path.is_file():
            try:
                self._data = json.loads(self.path.read_text())
            except json.JSONDecodeError:  # a damaged memory only costs a cold start
                self._data = {}

    @staticmethod
    def _key(student: str, fp: str) -> str:
        return f"{student}:{fp}"

    def best_params(self, student: str, fp: str) -> list[dict[str, Any]]:
        """Stored parameter sets, best first."""
        return [e["params"] for e in self._data.get(self._key(student, fp), [])]

    def record(self, student: str, fp: str, params: dict[str, Any], score: float, higher_is_better: bool) -> None:
        entries = [e for e in self._data.get(self._key(student, fp), []) if e["params"] != params]
        entries.append({"params": params, "score": float(score)})
        entries.sort(key=lambda e: -e["score"] if higher_is_better else e["score"])
        self._data[self._key(student, fp)] = entries[: self.keep]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
