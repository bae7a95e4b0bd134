"""``AutoDistiller``: teachers -> soft targets -> students on Ray -> a leaderboard scored on held-out rows.

Methods:
- ``legacy``: the full grid student x T x alpha, each config tuned with ``legacy_trials`` Optuna trials;
- ``hpm``: divergence-chosen temperatures, screening + promotion of at most ``max_configs`` configs,
  studies warm-started from the shared memory, and a progressive chain (each part a spec switch);
- ``hybrid``: both, in one table; ``auto``: hpm above 10,000 rows or 50 features, legacy under 1,000 rows,
  hpm in between.
Every student row carries the test scores of its hard-label twin: the same type and search space, trained
on one-hot labels in as many studies of the same trial budget as the type has tuned configs (legacy: the
grid; hpm: the configs promoted to full budget), the best on validation. Every tuned model (twins too) is
served calibrated (:mod:`hpm_ray.distill.calibration`): test scores, ``predict_proba`` and ``best_model``
use those probabilities.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from hpm_ray.config import validate_spec
from hpm_ray.distill import fusion
from hpm_ray.distill.catalog import COMPLEXITY_ORDER
from hpm_ray.distill.engine import (
    ConfigTask,
    TaskQueue,
    batch_size,
    put_payload,
    run_tasks,
)
from hpm_ray.distill.evaluate import better, resolve_metric, score, test_metrics
from hpm_ray.distill.memory import OptimizationMemory, fingerprint
from hpm_ray.distill.selection import config_grid, promote
from hpm_ray.distill.spec import DistillSpec
from hpm_ray.distill.splits import make_splits
from hpm_ray.distill.teachers import TeacherSet, given_teachers, train_default_teachers
from hpm_ray.distill.temperature import (
    DivergenceTemperature,
    FixedGrid,
    divergence_curve,
)
from hpm_ray.errors import SpecError

METHODS = ("auto", "legacy", "hpm", "hybrid")
STUDENT_STAGES = ("full", "chain")  # rows that compete for "best"; screen/probe/twin rows do not


def choose_method(n_rows: int, n_features: int) -> str:
    """The seed heuristic: big or wide data -> hpm, small data -> legacy (cheap enough to run in full)."""
    if n_rows > 10_000 or n_features > 50:
        return "hpm"
    return "legacy" if n_rows < 1_000 else "hpm"


def _num(v) -> float | None:
    """A JSON-safe number: NaN (e.g. KS of a multiclass task, a failed twin) becomes null."""
    v = float(v)
    return v if np.isfinite(v) else None


def _hard(student: str) -> str:
    """Memory key of a student type's hard-label twin."""
    return f"{student}+hard"


def _stderr_progress(min_interval: float = 2.0) -> Callable[[str], None]:
    """Progress lines on stderr: the first and last of each phase, and at most one per ``min_interval`` between."""
    last = {"t": 0.0, "phase": ""}

    def show(msg: str) -> None:
        now = time.perf_counter()
        phase = msg.split(":")[0]
        m = re.search(r"(\d+)/(\d+)", msg)
        finished = bool(m) and m.group(1) == m.group(2)
        if finished or phase != last["phase"] or now - last["t"] >= min_interval:
            print(f"[distill] {msg}", file=sys.stderr, flush=True)
            last.update(t=now, phase=phase)

    return show


class AutoDistiller:
    """Distil teachers into small sklearn-compatible students; see the module docstring for the methods.

    ``test_rows``: positions of the rows of ``X`` that form the test split (the caller's held-out block, as in a
    drift retrain); default a stratified ``test_size`` share (:func:`~hpm_ray.distill.splits.make_splits`).
    """

    def __init__(
        self,
        X,
        y,
        teachers: list | None = None,
        method: str = "auto",
        spec: DistillSpec | None = None,
        progress: bool | Callable[[str], None] = True,
        memory_path=None,
        test_rows=None,
        **overrides: Any,
    ):
        if method not in METHODS:
            raise SpecError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        base = (spec or DistillSpec()).model_dump()
        base.update({k: v for k, v in overrides.items() if v is not None})
        base["method"] = method if method != "auto" or spec is None else spec.method
        self.spec = validate_spec(DistillSpec, base, "distillation spec")
        s = self.spec
        self.splits = make_splits(X, y, s.validation_size, s.test_size, s.seed, s.max_rows, test_rows)
        self.metric = resolve_metric(s.selection_metric, self.splits.n_classes)
        n_rows = len(self.splits.y_train) + len(self.splits.y_val) + len(self.splits.y_test)
        self.method = choose_method(n_rows, self.splits.X_train.shape[1]) if s.method == "auto" else s.method
        self.user_teachers = teachers
        if teachers is not None:
            if not isinstance(teachers, (list, tuple)):
                teachers = [teachers]
            self.user_teachers = list(teachers)
        self.progress = _stderr_progress() if progress is True else (progress or None)
        self.memory_path = memory_path
        self.records: list[dict] = []
        self.timings: dict[str, float] = {}
        self.chain_note = ""
        self.results_: pd.DataFrame | None = None

    # --- teachers -------------------------------------------------------------------------------------
    def _teachers(self) -> TeacherSet:
        s, sp = self.spec, self.splits
        if self.user_teachers is not None:
            return given_teachers(self.user_teachers, sp)
        return train_default_teachers(
            sp, s.teacher_trees, s.teacher_folds, s.seed, self.progress, tune_trials=s.teacher_tune_trials
        )

    def _fuse(self, ts: TeacherSet) -> None:
        """Learn fusion on validation; keep every teacher's and every fusion's scores for the report."""
        sp, y_val = self.splits, self.splits.y_val
        singles = [score("log_loss", y_val, p) for p in ts.val]
        best_i = int(np.argmin(singles))
        w = fusion.fit_weights(ts.val, y_val)
        beta = fusion.fit_attention(ts.val, y_val)
        options = {
            "best": (lambda P: P[best_i]),
            "weights": (lambda P: fusion.combine(P, w)),
            "attention": (lambda P: fusion.combine(P, fusion.attention_weights(P, beta))),
        }
        self.fuse = options[self.spec.fusion]
        rows = [
            {
                "teacher": n,
                "weight": float(w[i]),
                "val_log_loss": singles[i],
                **{
                    f"test_{k}": v
                    for k, v in test_metrics(sp.y_test, ts.test[i]).items()
                    if k in ("auc", "log_loss", "ks", "accuracy")
                },
            }
            for i, n in enumerate(ts.names)
        ]
        if len(ts.names) > 1:
            for name in ("weights", "attention"):
                f = options[name]
                rows.append(
                    {
                        "teacher": f"fusion:{name}" + (f" (beta={beta:g})" if name == "attention" else ""),
                        "weight": float("nan"),
                        "val_log_loss": score("log_loss", y_val, f(ts.val)),
                        **{
                            f"test_{k}": v
                            for k, v in test_metrics(sp.y_test, f(ts.test)).items()
                            if k in ("auc", "log_loss", "ks", "accuracy")
                        },
                    }
                )
        self.teacher_table = pd.DataFrame(rows)
        self.teacher_train, self.teacher_val, self.teacher_test = (
            self.fuse(ts.train),
            self.fuse(ts.val),
            self.fuse(ts.test),
        )
        self.teacher_name = (
            ts.names[best_i] if self.spec.fusion == "best" or len(ts.names) == 1 else f"fusion:{self.spec.fusion}"
        )

    def _augment(self, ts: TeacherSet):
        from hpm_ray.distill.augment import munge

        s, sp = self.spec, self.splits
        if not s.augment:
            return None, None
        X_aug = munge(sp.X_train, int(s.augment_fraction * len(sp.y_train)), seed=s.seed, time_budget=s.augment_seconds)
        return X_aug, self.fuse([m.predict_proba(X_aug) for m in ts.models])

    # --- methods --------------------------------------------------------------------------------------
    def _task(self, method: str, stage: str, student: str, t: float, a: float, study: int = 0, **kw) -> ConfigTask:
        key = f"{method}:{stage}:{student}:T{t:g}:a{a:g}" + (f":{study}" if study else "")
        return ConfigTask(
            key=key, student=student, temperature=t, alpha=a, metric=self.metric, seed=self.spec.seed, stage=stage, **kw
        )

    def _twins(self, method: str, n_trials: int, studies: dict[str, range], warm: dict[str, list]) -> list[ConfigTask]:
        """Hard-label twin studies: as many per student type as it has tuned configs, so the twin gets the same
        number of fits and the same freedom of selection (its best study on validation is the twin)."""
        return [
            self._task(method, "twin", st, 1.0, 0.0, i, n_trials=n_trials, warm_params=warm.get(_hard(st), []))
            for st in self.spec.students
            for i in studies[st]
        ]

    def _run_legacy(self, ref) -> list[dict]:
        s = self.spec
        grid = config_grid(s.students, {st: s.temperatures for st in s.students}, s.alphas)
        tasks = [self._task("legacy", "full", st, t, a, n_trials=s.legacy_trials) for st, t, a in grid]
        per_type = range(len(s.temperatures) * len(s.alphas))
        twins = self._twins("legacy", s.legacy_trials, {st: per_type for st in s.students}, {})
        return run_tasks(ref, tasks + twins, self.progress, "legacy")

    def _run_hpm(self, ref) -> list[dict]:
        """Probes -> screening -> full budget -> chain on one task queue: a student's screening starts as soon as
        its probe is back, and the hard-label twins (they depend on nothing) fill the CPUs the phases leave idle."""
        from hpm_ray.distill.chain import chain_note, submit_chain

        s, sp = self.spec, self.splits
        memory = OptimizationMemory(self.memory_path) if s.shared_memory else None
        fp = fingerprint(sp.X_train, sp.n_classes)

        def warm(student: str, t: float | None = None, a: float | None = None) -> list[dict]:
            """Stored parameter sets for a config: its own best first, then the student's other configs'."""
            return memory.best_params(student, fp, self.metric, t, a) if memory else []

        start = {st: next(iter(warm(st)), {}) for st in s.students}  # the student's best anywhere
        queue = TaskQueue(ref, self.progress, "hpm")
        # twins remember their own (hard-label) optimum
        twin_warm = {_hard(st): warm(_hard(st), 1.0, 0.0) for st in s.students}
        twins = self._twins("hpm", s.hpm_trials, {st: range(1) for st in s.students}, twin_warm)
        queue.hold(twins)  # one study per type now; one more per further config that reaches the full budget
        records: list[dict] = []
        temps = {
            st: FixedGrid().choose(None, None, s.temperatures) for st in s.students
        }  # unless a probe says otherwise
        probing = s.adaptive_temperature and len(s.temperatures) > s.temperatures_per_student
        n_grid = len(s.students) * len(s.alphas) * (s.temperatures_per_student if probing else len(s.temperatures))
        screening = s.adaptive_selection and n_grid > s.max_configs
        cheap = {"budget": s.screen_fraction, "keep_model": False}  # one low-budget fit with the start parameters

        def configs(st: str) -> list[ConfigTask]:
            """A student's (T, alpha) configs, queued for screening or, with nothing to screen, for the full budget."""
            grid = config_grid([st], temps, s.alphas)
            if screening:
                tasks = [self._task("hpm", "screen", st, t, a, fixed_params=start[st], **cheap) for _, t, a in grid]
                queue.submit(tasks, batch_size(n_grid, queue.n_cpus))
            else:
                tasks = [
                    self._task("hpm", "full", st, t, a, n_trials=s.hpm_trials, warm_params=warm(st, t, a))
                    for _, t, a in grid
                ]
                queue.submit(tasks)
            return tasks

        clock = [time.perf_counter()]

        def lap(name: str) -> None:  # phases overlap: each lap runs from the previous phase's end to this one's
            self.timings[name] = time.perf_counter() - clock[0]
            clock[0] += self.timings[name]

        first: list[ConfigTask] = []
        self.divergence: dict[str, list[float]] = {}
        if probing:
            # one probe per student on pure teacher targets: what can this student represent?
            probes = [self._task("hpm", "probe", st, 1.0, 1.0, fixed_params=start[st], **cheap) for st in s.students]
            schedule = DivergenceTemperature(s.temperatures_per_student)
            queue.submit(probes)
            for rec in queue.results(probes):
                records.append(rec)
                st = rec["task"].student
                if rec["status"] == "ok":
                    self.divergence[st] = divergence_curve(self.teacher_val, rec["val_proba"], s.temperatures)
                    temps[st] = schedule.choose(self.teacher_val, rec["val_proba"], s.temperatures)
                first += configs(st)
            lap("hpm probes")
        else:
            for st in s.students:
                first += configs(st)
        full = first
        if screening:
            screened = list(queue.results(first))
            records += screened
            lap("hpm screening")
            full = [
                self._task(
                    "hpm",
                    "full",
                    t.student,
                    t.temperature,
                    t.alpha,
                    n_trials=s.hpm_trials,
                    warm_params=warm(t.student, t.temperature, t.alpha),
                )
                for t in (r["task"] for r in promote(screened, s.max_configs, self.metric))
            ]
            queue.submit(full)
        n_full = Counter(t.student for t in full)
        more = self._twins("hpm", s.hpm_trials, {st: range(1, n_full[st]) for st in s.students}, twin_warm)
        queue.hold(more)
        twins += more
        done = list(queue.results(full))
        records += done
        lap("hpm full budget")
        # the chain uses each type's best tuned config, or its best screened one if it was not promoted
        stage_src = {**self._best_by_type(records, "screen"), **self._best_by_type(done, "full")}
        if s.chain and len(stage_src) >= 2:
            order = [st for st in COMPLEXITY_ORDER if st in stage_src] + sorted(set(stage_src) - set(COMPLEXITY_ORDER))
            src = {st: stage_src[st] for st in order}
            stages = [
                self._task(
                    "hpm",
                    "chain",
                    st,
                    r["task"].temperature,
                    r["task"].alpha,
                    fixed_params=r["task"].fixed_params if r["task"].stage == "screen" else r["params"],
                )
                for st, r in src.items()
            ]
            chain_recs = list(queue.results(submit_chain(queue, stages, self.metric, s.min_improvement)))
            self.chain_note = chain_note(chain_recs, s.min_improvement)
            records += chain_recs
            lap("hpm chain")
        twin_recs = list(queue.results(twins))
        records += twin_recs
        lap("hpm twins (rest)")
        if memory:
            for r in done + twin_recs:  # the best few parameter sets of every tuned config
                if r["status"] == "ok":
                    t = r["task"]
                    student = t.student if t.stage == "full" else _hard(t.student)
                    for sc, params in r["top"]:
                        memory.record(student, fp, self.metric, t.temperature, t.alpha, params, sc)
        return records

    def _best_by_type(self, records: list[dict], stage: str) -> dict[str, dict]:
        best: dict[str, dict] = {}
        for r in records:
            if r["status"] == "ok" and r["task"].stage == stage:
                st = r["task"].student
                if st not in best or better(self.metric, r["val_score"], best[st]["val_score"]):
                    best[st] = r
        return best

    # --- public API -----------------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        from hpm_ray.runtime import init_ray

        rt = self.spec.runtime
        init_ray(rt.address, rt.num_cpus, rt.verbose)
        t0 = time.perf_counter()
        ts = self._teachers()
        self.teacher_set = ts
        self._fuse(ts)
        X_aug, t_aug = self._augment(ts)
        self.n_augmented = 0 if X_aug is None else len(X_aug)
        self.timings["teachers"] = time.perf_counter() - t0
        sp = self.splits
        self.payload_ref = put_payload(
            sp.X_train, sp.y_train, sp.X_val, sp.y_val, self.teacher_train, self.teacher_val, X_aug, t_aug
        )
        methods = ["legacy", "hpm"] if self.method == "hybrid" else [self.method]
        for m in methods:
            t1 = time.perf_counter()
            recs = self._run_legacy(self.payload_ref) if m == "legacy" else self._run_hpm(self.payload_ref)
            for r in recs:
                r["method"] = m
            self.records += recs
            self.timings[m] = time.perf_counter() - t1
        self.timings["total"] = time.perf_counter() - t0
        self.results_ = self._table()
        return self.results_

    def _table(self) -> pd.DataFrame:
        sp = self.splits
        rows = []
        for r in self.records:
            task = r["task"]
            row = {
                "method": r["method"],
                "stage": task.stage,
                "student": task.student,
                "temperature": task.temperature,
                "alpha": task.alpha,
                "status": r["status"],
                "val_score": r["val_score"],
                "n_fits": r["n_fits"],
                "fit_seconds": r.get("fit_seconds", float("nan")),
                "params": json.dumps(r["params"], sort_keys=True),
                "error": r.get("error", ""),
                "key": task.key,
                "node_id": r.get("node_id", ""),
                "attempt": r.get("attempt", 0),
            }
            if r["status"] == "ok" and task.stage in (*STUDENT_STAGES, "twin"):
                model = r["model"]
                t = time.perf_counter()
                proba = r["calibrated"].predict_proba(sp.X_test)  # the served probabilities
                row["predict_ms_per_1k"] = (time.perf_counter() - t) * 1000.0 * 1000.0 / len(sp.X_test)
                row.update(test_metrics(sp.y_test, proba, self.teacher_test))
                row["size"] = model.size()
                row["size_kb"] = model.size_bytes() / 1024.0
                row["calibration"] = r["calibration"]
            if "chain_step" in r:
                row["chain_step"] = r["chain_step"]
                row["chain_gain"] = r.get("chain_gain", float("nan"))
            rows.append(row)
        df = pd.DataFrame(rows)
        # a type's twin is its best twin study on validation (the same selection its soft configs get)
        hib = better(self.metric, 1.0, 0.0)
        twins = (
            df[(df.stage == "twin") & (df.status == "ok")]
            .sort_values("val_score", ascending=not hib)
            .drop_duplicates(["method", "student"])
            .set_index(["method", "student"])
        )
        for col in ("auc", "accuracy", "ece", "brier"):
            if col in df:
                df[f"twin_{col}"] = [
                    twins[col].get((m, st), np.nan) if stage in STUDENT_STAGES else np.nan
                    for m, st, stage in zip(df.method, df.student, df.stage)
                ]
        return df

    def _best_index(self) -> int:
        df = self.results_
        if df is None:
            raise RuntimeError("call run() first")
        cand = df[df.stage.isin(STUDENT_STAGES) & (df.status == "ok")]
        if cand.empty:
            raise RuntimeError("every student config failed; see the 'error' column of the results")
        hib = better(self.metric, 1.0, 0.0)
        return int(cand.val_score.idxmax() if hib else cand.val_score.idxmin())

    def best_model(self):
        """The best student as served: temperature undone, calibrated on validation (a scikit-learn classifier)."""
        return self.records[self._best_index()]["calibrated"]

    def predict_proba(self, X) -> np.ndarray:
        return self.best_model().predict_proba(X)

    def predict(self, X) -> np.ndarray:
        return self.splits.classes[self.predict_proba(X).argmax(axis=1)]

    def summary(self, model_uri: str | None = None) -> dict:
        """The ``summary.json`` content (test scores; selection used validation only)."""
        df = self.results_
        i = self._best_index()
        b = df.loc[i]
        tm = test_metrics(self.splits.y_test, self.teacher_test)
        evaluated = df[df.stage.isin(("full", "chain", "screen"))]
        return {
            "method": self.method,
            "wall_time_s": round(self.timings["total"], 3),
            "n_fits": int(df.n_fits.sum()),
            "n_configs_evaluated": len(evaluated),
            "teacher": {k: _num(tm[k]) for k in ("auc", "accuracy", "log_loss", "ks", "ece", "brier")}
            | {"name": self.teacher_name},
            "best": {
                "student": b.student,
                "temperature": float(b.temperature),
                "alpha": float(b.alpha),
                "params": json.loads(b.params),
                "calibration": b.calibration,
                **{
                    k: _num(b[k])
                    for k in ("auc", "accuracy", "log_loss", "ks", "ece", "brier", "fidelity", "predict_ms_per_1k")
                },
                "model_uri": model_uri,
            },
            "hard_label_twin": {k: _num(b[f"twin_{k}"]) for k in ("auc", "accuracy", "ece", "brier")},
        }

    def generate_report(self, path) -> str:
        from hpm_ray.distill.report import build_report

        return str(build_report(self).save(path))
