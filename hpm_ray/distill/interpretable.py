"""Does distillation pay for a small, interpretable student? Per preset: teacher vs distilled vs hard-label twin.

For every seed: split, train (or load) the cross-fitted teacher ensemble, fuse it on validation, then for
each preset run every switched-on technique over the T x alpha grid, each config an Optuna study of
``trials`` fits on Ray:
- ``soft``: the preset trained on alpha * softened teacher + (1 - alpha) * label;
- ``augment``: the same plus MUNGE rows labelled by the teacher (time-budgeted);
- ``chain``: teacher -> assistant (a mid-size LightGBM) -> preset, the preset learning from the assistant.
The hard-label twin gets the same budget: as many studies of ``trials`` fits (other seeds), one-hot labels.
Technique, T, alpha and hyperparameters are chosen on validation only; test AUC is computed for the report.
Across seeds: mean student - twin test AUC with a 95 % t-interval, and the share of the teacher-twin gap
the student closes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from hpm_ray.distill.evaluate import better, gap_closed
from hpm_ray.distill.spec import SoftAlphas, SplitTeacherSpec, StudentName, StudentNames
from hpm_ray.metrics import expected_calibration_error, roc_auc

TECHNIQUES = ("soft", "augment", "chain")


class InterpretableSpec(SplitTeacherSpec):
    presets: StudentNames = Field(default_factory=lambda: ["scorecard", "tree4", "gbm20"])  # ebm: an optional extra
    techniques: list[Literal["soft", "augment", "chain"]] = Field(default_factory=lambda: list(TECHNIQUES))
    temperatures: list[float] = Field(default_factory=lambda: [1.0, 2.0])
    alphas: SoftAlphas = Field(default_factory=lambda: [0.5, 1.0])
    trials: int = Field(4, ge=1)  # Optuna fits per (technique, T, alpha) config; the twin gets as many in total
    warm_start: bool = True  # every study (students' and twins' alike) tries the preset's default parameters first
    selection_metric: Literal["auc", "ks", "log_loss"] = "auc"
    assistant: StudentName = "lgbm"
    assistant_params: dict[str, Any] = Field(
        default_factory=lambda: {"n_estimators": 100, "num_leaves": 15, "learning_rate": 0.05}
    )
    assistant_alpha: float = Field(1.0, ge=0.0, le=1.0)
    augment_fraction: float = Field(1.0, gt=0.0, le=5.0)  # synthetic rows as a share of training rows
    augment_seconds: float = Field(30.0, gt=0.0)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])

    @field_validator("techniques", "seeds")
    @classmethod
    def _non_empty(cls, v: list) -> list:
        if not v:
            raise ValueError("needs at least one value")
        return v


# --- pure statistics --------------------------------------------------------------------------------------
def t_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval of the mean; (mean, NaN, NaN) for fewer than two values."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


# --- one seed ---------------------------------------------------------------------------------------------
@dataclass
class PresetOutcome:
    """One preset on one seed: the validation-selected student and twin, and the best record per technique."""

    preset: str
    seed: int
    teacher_auc: float
    student: dict  # the winning record (technique, T, alpha, params, model, val_score) + test_auc, test_ece
    twin: dict
    techniques: dict[str, dict] = field(default_factory=dict)  # technique -> its validation-best record
    teacher_ece: float = float("nan")

    @property
    def diff(self) -> float:
        return self.student["test_auc"] - self.twin["test_auc"]


def _grid(spec: InterpretableSpec) -> list[tuple[float, float]]:
    return [(t, a) for t in spec.temperatures for a in spec.alphas]


def run_seed(X, y, spec: InterpretableSpec, seed: int, progress: Callable[[str], None] | None = None) -> dict:
    """Every preset x technique x (T, alpha) config and the twins for one seed; returns outcomes and timings."""
    from hpm_ray.distill import fusion
    from hpm_ray.distill.chain import submit_chain
    from hpm_ray.distill.engine import ConfigTask, TaskQueue, put_payload
    from hpm_ray.distill.splits import make_splits
    from hpm_ray.distill.teachers import train_default_teachers

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sp = make_splits(X, y, spec.validation_size, spec.test_size, seed, spec.max_rows)
    ts = train_default_teachers(
        sp, spec.teacher_trees, spec.teacher_folds, seed, progress, tune_trials=spec.teacher_tune_trials
    )
    w = fusion.fit_weights(ts.val, sp.y_val)
    t_train, t_val, t_test = (fusion.combine(P, w) for P in (ts.train, ts.val, ts.test))
    timings["teachers"] = time.perf_counter() - t0
    ref = put_payload(sp.X_train, sp.y_train, sp.X_val, sp.y_val, t_train, t_val)
    metric, grid = spec.selection_metric, _grid(spec)

    warm = {p: [default_params(p)] if spec.warm_start else [] for p in spec.presets}

    def task(preset: str, technique: str, t: float, a: float, study_seed: int = seed) -> ConfigTask:
        return ConfigTask(
            key=f"{preset}:{technique}:T{t:g}:a{a:g}:s{study_seed}",
            student=preset,
            temperature=t,
            alpha=a,
            n_trials=spec.trials,
            metric=metric,
            seed=study_seed,
            stage=technique,
            warm_params=warm[preset],
        )

    plain = TaskQueue(ref, progress, f"seed {seed}")
    by_technique: dict[str, list] = {}
    if "soft" in spec.techniques:
        by_technique["soft"] = [task(p, "soft", t, a) for p in spec.presets for t, a in grid]
        plain.submit(by_technique["soft"])
    n_configs = len(spec.techniques) * len(grid)
    twins = [task(p, "twin", 1.0, 0.0, seed * 1000 + i) for p in spec.presets for i in range(n_configs)]
    plain.submit(twins)
    chain_tasks = []
    if "chain" in spec.techniques:
        for p in spec.presets:
            for t, a in grid:
                assistant = ConfigTask(
                    key=f"{p}:assistant",
                    student=spec.assistant,
                    temperature=1.0,
                    alpha=spec.assistant_alpha,
                    fixed_params=spec.assistant_params,
                    metric=metric,
                    seed=seed,
                    stage="chain",
                )
                # min_improvement -inf: the preset stage always runs (a weak student never beats the assistant)
                chain_tasks += submit_chain(plain, [assistant, task(p, "chain", t, a)], metric, -math.inf)
    aug_queue, n_aug = None, 0
    if "augment" in spec.techniques:
        from hpm_ray.distill.augment import munge

        t1 = time.perf_counter()
        X_aug = munge(
            sp.X_train, int(spec.augment_fraction * len(sp.y_train)), seed=seed, time_budget=spec.augment_seconds
        )
        t_aug = fusion.combine([m.predict_proba(X_aug) for m in ts.models], w)
        n_aug, timings["augment"] = len(X_aug), time.perf_counter() - t1
        aug_queue = TaskQueue(
            put_payload(sp.X_train, sp.y_train, sp.X_val, sp.y_val, t_train, t_val, X_aug, t_aug),
            progress,
            f"seed {seed} augmented",
        )
        by_technique["augment"] = [task(p, "augment", t, a) for p in spec.presets for t, a in grid]
        aug_queue.submit(by_technique["augment"])
    records = list(plain.results([*by_technique.get("soft", []), *twins, *chain_tasks]))
    if aug_queue is not None:
        records += aug_queue.results(by_technique["augment"])
    timings["students"] = time.perf_counter() - t0 - timings["teachers"]

    failed = [r for r in records if r["status"] != "ok"]
    if failed and progress:
        progress(f"seed {seed}: {len(failed)} config(s) failed, first: {failed[0].get('error', '')}")
    outcomes = []
    for p in spec.presets:
        mine = [
            r for r in records if r["status"] == "ok" and r["task"].student == p and r.get("chain_step") != 1
        ]  # a chain's first stage is the assistant, not the preset
        for r in mine:
            r["technique"] = r["task"].stage
            r["test_auc"] = roc_auc(sp.y_test, r["model"].predict_proba(sp.X_test))  # the student's ranking
            r["test_ece"] = expected_calibration_error(sp.y_test, r["calibrated"].predict_proba(sp.X_test))  # served
        cands = {tech: _best([r for r in mine if r["technique"] == tech], metric) for tech in spec.techniques}
        cands = {k: v for k, v in cands.items() if v is not None}
        student = _best(list(cands.values()), metric)
        twin = _best([r for r in mine if r["technique"] == "twin"], metric)
        if student is None or twin is None:
            from hpm_ray.errors import HPMError

            raise HPMError(f"every {p} config failed on seed {seed}: {failed[0].get('error', '') if failed else ''}")
        outcomes.append(
            PresetOutcome(
                p, seed, roc_auc(sp.y_test, t_test), student, twin, cands, expected_calibration_error(sp.y_test, t_test)
            )
        )
    return {
        "seed": seed,
        "outcomes": outcomes,
        "timings": timings,
        "n_augmented": n_aug,
        "n_fits": int(sum(r["n_fits"] for r in records)),
        "rows": (len(sp.y_train), len(sp.y_val), len(sp.y_test)),
    }


def default_params(student: str) -> dict[str, Any]:
    """The student's constructor defaults for the hyperparameters its search space tunes.

    A study of a few trials can land far from a sensible setting by chance; starting every study there
    (the twins' too, so budgets stay equal) keeps the comparison about the targets, not the draws.
    """
    import optuna

    from hpm_ray.distill.catalog import STUDENTS

    cls = STUDENTS[student]
    tuned = cls.suggest(optuna.create_study().ask())
    return {k: v for k, v in cls().get_params().items() if k in tuned}


def _best(records: list[dict], metric: str) -> dict | None:
    best = None
    for r in records:
        if best is None or better(metric, r["val_score"], best["val_score"]):
            best = r
    return best


# --- across seeds -----------------------------------------------------------------------------------------
def run_experiment(
    X,
    y,
    spec: InterpretableSpec,
    progress: Callable[[str], None] | None = None,
    on_seed: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every seed in turn (``on_seed`` sees each seed's result as soon as it is done)."""
    from hpm_ray.runtime import init_ray

    rt = spec.runtime
    init_ray(rt.address, rt.num_cpus, rt.verbose)
    seeds = []
    for s in spec.seeds:
        seeds.append(run_seed(X, y, spec, s, progress))
        if on_seed:
            on_seed(seeds[-1])
    return seeds


def summarise(seeds: list[dict]) -> pd.DataFrame:
    """One row per preset: means over seeds, the student - twin interval, gap closed, the techniques' record."""
    rows = []
    presets = [o.preset for o in seeds[0]["outcomes"]]
    for p in presets:
        outs = [o for s in seeds for o in s["outcomes"] if o.preset == p]
        teacher, student, twin = (
            float(np.mean(v)) for v in zip(*[(o.teacher_auc, o.student["test_auc"], o.twin["test_auc"]) for o in outs])
        )
        mean, lo, hi = t_interval([o.diff for o in outs])
        eces = {
            k: float(np.mean(v))
            for k, v in zip(
                ("teacher_ece", "student_ece", "twin_ece"),
                zip(*[(o.teacher_ece, o.student["test_ece"], o.twin["test_ece"]) for o in outs]),
            )
        }
        per_tech = {
            tech: float(np.mean([o.techniques[tech]["test_auc"] - o.twin["test_auc"] for o in outs]))
            for tech in outs[0].techniques
            if all(tech in o.techniques for o in outs)
        }
        chosen = pd.Series([o.student["technique"] for o in outs]).value_counts()
        rows.append(
            {
                "preset": p,
                "teacher_auc": teacher,
                "student_auc": student,
                "twin_auc": twin,
                "diff_mean": mean,
                "diff_lo": lo,
                "diff_hi": hi,
                "gap_closed": gap_closed(student, twin, teacher),
                **eces,
                "chosen_technique": ", ".join(f"{k} x{v}" for k, v in chosen.items()),
                "best_technique": max(per_tech, key=per_tech.get) if per_tech else "",
                **{f"diff_{k}": v for k, v in per_tech.items()},
            }
        )
    return pd.DataFrame(rows)


def build_report(seeds: list[dict], spec: InterpretableSpec):
    """The HTML report: the summary table, then per preset its seeds and its readable artefact (first seed)."""
    from hpm_ray.distill.report import preset_section
    from hpm_ray.report import Report

    summary = summarise(seeds)
    rep = Report(
        "Distillation for small, interpretable students",
        f"{len(seeds)} seed(s); techniques {', '.join(spec.techniques)}; T in {spec.temperatures}, "
        f"alpha in {spec.alphas}; selection by validation {spec.selection_metric}; test AUC for reporting only",
    )
    rep.heading("Summary over seeds")
    rep.table(summary, flags={"diff_mean": lambda v: v >= 0.005})
    rep.text(
        "diff = distilled student's test AUC - its hard-label twin's (same preset, same number of fits); "
        "[diff_lo, diff_hi] is the 95 % t-interval over seeds; gap closed = (student - twin) / (teacher - twin) "
        "of the means; diff_<technique> is the mean test gain of that technique's validation-best config. "
        "AUC is the student's own ranking; ECE (10 bins) is of the served model: temperature undone and the "
        "calibrator chosen on validation.",
        note=True,
    )
    for p in summary.preset:
        outs = [o for s in seeds for o in s["outcomes"] if o.preset == p]
        preset_section(rep, p, [_row(o) for o in outs], outs[0].student["model"])
    return rep


def _row(o: PresetOutcome) -> dict:
    """One preset on one seed for the tables: test AUCs, the validation scores selection saw, the winner's config."""
    s, tw = o.student, o.twin
    return {
        "preset": o.preset,
        "seed": o.seed,
        "teacher_auc": o.teacher_auc,
        "student_auc": s["test_auc"],
        "twin_auc": tw["test_auc"],
        "student_ece": s["test_ece"],
        "twin_ece": tw["test_ece"],
        "student_val": s["val_score"],
        "twin_val": tw["val_score"],
        "gap_closed": gap_closed(s["test_auc"], tw["test_auc"], o.teacher_auc),
        "technique": s["technique"],
        "temperature": s["task"].temperature,
        "alpha": s["task"].alpha,
        "params": s["params"],
        **{f"{k}_auc": v["test_auc"] for k, v in o.techniques.items()},
    }


def write_outputs(seeds: list[dict], spec: InterpretableSpec, out_dir: str | Path) -> list[Path]:
    """summary.csv, per-seed results.csv, report.html and each preset's readable export (first seed's student)."""
    from hpm_ray.distill.export import write_artifacts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "summary.csv", out / "results.csv", out / "report.html"]
    summarise(seeds).to_csv(files[0], index=False)
    pd.DataFrame([_row(o) for s in seeds for o in s["outcomes"]]).to_csv(files[1], index=False)
    build_report(seeds, spec).save(files[2])
    for o in seeds[0]["outcomes"]:
        files += write_artifacts(o.student["model"], out / "exports", o.preset)
    if "mlflow" in sys.modules:
        import mlflow

        if mlflow.active_run() is not None:
            for f in files[:3]:
                mlflow.log_artifact(str(f))
    return files
