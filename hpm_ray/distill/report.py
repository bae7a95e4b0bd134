"""The distillation HTML report: leaderboard, student vs teacher vs twin, chain, teacher weights, T/alpha."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpm_ray.metrics import get_scorer
from hpm_ray.report import Report

_COLS = [
    "method",
    "stage",
    "student",
    "temperature",
    "alpha",
    "val_score",
    "auc",
    "twin_auc",
    "accuracy",
    "log_loss",
    "ks",
    "ece",
    "twin_ece",
    "calibration",
    "fidelity",
    "size",
    "predict_ms_per_1k",
]  # the rest is in results.csv


def build_report(d) -> Report:
    """``d`` is a finished :class:`~hpm_ray.distill.auto.AutoDistiller`."""
    df: pd.DataFrame = d.results_
    summ = d.summary()
    nan = float("nan")
    for part in (summ["teacher"], summ["best"], summ["hard_label_twin"]):  # null (e.g. multiclass KS) shows as "-"
        part.update({k: nan for k, v in part.items() if v is None and k != "model_uri"})
    rep = Report(
        "HPM-KD distillation",
        f"method {d.method}; selection by validation {d.metric}; "
        f"test split ({len(d.splits.y_test):,} rows) used for these scores only",
    )
    t = summ["teacher"]
    rep.heading("Best student vs teacher vs hard-label twin")
    keys = ("auc", "accuracy", "ks", "log_loss", "ece", "brier")
    b, tw = summ["best"], summ["hard_label_twin"]
    rep.table(
        [
            {"model": f"teacher ({t['name']})", **{k: t[k] for k in keys}},
            {
                "model": f"best student ({b['student']}, T={b['temperature']:g}, alpha={b['alpha']:g}, "
                f"calibration {b['calibration']})",
                **{k: b[k] for k in keys},
            },
            {"model": "hard-label twin (same type, same budget)", **{k: tw.get(k, nan) for k in keys}},
        ]
    )
    rep.text(
        "Student and twin probabilities are served calibrated: temperature undone, then a calibrator "
        "(none / temperature / Platt / isotonic) chosen by cross-validated Brier score on the validation rows."
    )
    rep.text(
        f"{summ['n_fits']:,} student fits, {summ['n_configs_evaluated']} configs evaluated, "
        f"wall time {summ['wall_time_s']:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in d.timings.items())})."
    )
    students = df[df.stage.isin(("full", "chain")) & (df.status == "ok")].copy()
    rep.heading("Leaderboard (full-budget and chain students)")
    if not students.empty:
        hib = get_scorer(d.metric).greater_is_better
        students = students.sort_values("val_score", ascending=not hib)
        rep.table(
            students[[c for c in _COLS if c in students]].head(40),
            flags={"auc": lambda v: v >= t["auc"] * 0.99} if "auc" in students else None,
        )
        by_type = students.groupby("student")[["auc", "twin_auc"]].max()
        rep.bar_chart(
            list(by_type.index),
            {"soft-label student": by_type.auc.tolist(), "hard-label twin": by_type.twin_auc.tolist()},
            "Best test AUC per student type",
            "test AUC",
            hlines={"teacher": t["auc"]},
        )
    _preset_sections(rep, d, students, t["auc"])
    failed = df[df.status == "failed"]
    if not failed.empty:
        rep.heading("Failed configs")
        rep.table(failed[["method", "stage", "student", "temperature", "alpha", "error"]])
    rep.heading("Teachers and fusion")
    rep.text(
        "Fusion weights and attention sharpness were fitted on validation rows; the best single teacher is "
        "listed for comparison.",
        note=True,
    )
    tuned = getattr(d.teacher_set, "tuned", None)
    if tuned is not None:
        rep.text(
            f"lgbm_tuned is a LightGBM tuned on validation ({tuned.trials} Optuna trials, each early-stopped; "
            f"{tuned.seconds:.0f} s; {tuned.params['n_estimators']} rounds): the single model a user would try "
            "first. A teacher below it on test is not worth copying.",
            note=True,
        )
    rep.table(d.teacher_table)
    chain = df[df.stage == "chain"]
    if not chain.empty:
        rep.heading("Progressive chain")
        rep.text(d.chain_note)
        rep.table(
            chain[
                [
                    c
                    for c in ("chain_step", "student", "temperature", "alpha", "val_score", "chain_gain", "auc")
                    if c in chain
                ]
            ]
        )
    rep.heading("Effect of temperature and alpha")
    full = df[(df.stage.isin(("full", "screen"))) & (df.status == "ok")]
    for stage in ("full", "screen"):
        part = full[full.stage == stage]
        if part.empty or part.temperature.nunique() < 2 and part.alpha.nunique() < 2:
            continue
        for by, axis, over in (("temperature", "T", "alpha"), ("alpha", "alpha", "T")):
            series = {}
            for st, g in part.groupby("student"):
                agg = g.groupby(by).val_score.mean()
                series[st] = (agg.index.to_numpy(float), agg.to_numpy(float))
            title = f"Validation {d.metric} vs {by} ({stage} rung, mean over {over})"
            rep.line_chart(series, title, axis, d.metric, markers=True)
    if getattr(d, "divergence", None):
        rep.heading("Adaptive temperature: teacher-student divergence")
        temps = np.asarray(d.spec.temperatures, float)
        rep.line_chart(
            {st: (temps, np.asarray(v)) for st, v in d.divergence.items()},
            "KL(softened teacher at T || probe student), validation rows",
            "T",
            "KL",
            markers=True,
        )
    return rep


def preset_section(rep: Report, preset: str, rows: list[dict], model) -> None:
    """One constrained preset: teacher, distilled student and hard-label twin (one row per seed or run), the
    share of the teacher-twin gap closed, and the model as a person reads it (points table or rules)."""
    from hpm_ray.distill.export import DEFAULT_PDO, readable

    rep.heading(f"Preset {preset}: teacher vs distilled student vs hard-label twin")
    rep.table(
        [
            {
                k: (
                    ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}" for a, b in v.items())
                    if isinstance(v, dict)
                    else v
                )
                for k, v in r.items()
            }
            for r in rows
        ],
        flags={"gap_closed": lambda v: v > 0},
    )
    rep.text(
        "gap closed = (student - twin) / (teacher - twin) on test AUC; the twin is the same preset trained on "
        "hard labels with the same number of fits.",
        note=True,
    )
    table = readable(model)
    if table is None:
        return
    if "points" in table:
        rep.heading(f"Points table (score = sum of points; every {DEFAULT_PDO:g} points double the odds)", level=3)
    elif "rule" in table:
        rep.heading("Rules (one per leaf, riskiest first)", level=3)
    else:  # EBM: which terms matter, then every main effect's shape
        terms = table.dropna(subset=["importance"]).drop_duplicates("term")
        rep.bar_chart(list(terms.term), {"mean |score|": list(terms.importance)}, "EBM term importance", "log-odds")
        rep.heading("Shape tables (log-odds added per bin; P = sigmoid of intercept + the row's scores)", level=3)
    rep.table(table)


def _preset_sections(rep: Report, d, students: pd.DataFrame, teacher_auc: float) -> None:
    """A section per readable student in an AutoDistiller run: its validation-best student and its twin."""
    from hpm_ray.distill.ebm import EBMStudent
    from hpm_ray.distill.evaluate import better, gap_closed
    from hpm_ray.distill.presets import PRESETS

    for preset in [*(c.name for c in PRESETS), EBMStudent.name]:  # the readable students
        cand = students[students.student == preset] if not students.empty else students
        if cand.empty:
            continue
        i = cand.val_score.idxmax() if better(d.metric, 1.0, 0.0) else cand.val_score.idxmin()
        r = cand.loc[i]
        rows = [
            {
                "teacher_auc": teacher_auc,
                "student_auc": r.auc,
                "twin_auc": r.twin_auc,
                "gap_closed": gap_closed(r.auc, r.twin_auc, teacher_auc),
                "stage": r.stage,
                "temperature": r.temperature,
                "alpha": r.alpha,
                "params": r.params,
                "size": r["size"],
            }
        ]
        preset_section(rep, preset, rows, d.records[i]["model"])
