"""The distillation HTML report: leaderboard, student vs teacher vs twin, chain, teacher weights, T/alpha."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpm_ray.report import Report

_COLS = ["method", "stage", "student", "temperature", "alpha", "val_score", "auc", "twin_auc", "accuracy",
         "log_loss", "ks", "fidelity", "size", "predict_ms_per_1k"]  # the rest is in results.csv


def build_report(d) -> Report:
    """``d`` is a finished :class:`~hpm_ray.distill.auto.AutoDistiller`."""
    df: pd.DataFrame = d.results_
    summ = d.summary()
    nan = float("nan")
    for part in (summ["teacher"], summ["best"], summ["hard_label_twin"]):  # null (e.g. multiclass KS) shows as "-"
        part.update({k: nan for k, v in part.items() if v is None and k != "model_uri"})
    rep = Report("HPM-KD distillation", f"method {d.method}; selection by validation {d.metric}; "
                 f"test split ({len(d.splits.y_test):,} rows) used for these scores only")
    t = summ["teacher"]
    rep.heading("Best student vs teacher vs hard-label twin")
    rep.table([{"model": f"teacher ({t['name']})", "auc": t["auc"], "accuracy": t["accuracy"], "ks": t["ks"], "log_loss": t["log_loss"]},
               {"model": f"best student ({summ['best']['student']}, T={summ['best']['temperature']:g}, alpha={summ['best']['alpha']:g})",
                "auc": summ["best"]["auc"], "accuracy": summ["best"]["accuracy"], "ks": summ["best"]["ks"], "log_loss": summ["best"]["log_loss"]},
               {"model": "hard-label twin (same type, same budget)", "auc": summ["hard_label_twin"]["auc"],
                "accuracy": summ["hard_label_twin"]["accuracy"], "ks": float("nan"), "log_loss": float("nan")}])
    rep.text(f"{summ['n_fits']:,} student fits, {summ['n_configs_evaluated']} configs evaluated, "
             f"wall time {summ['wall_time_s']:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in d.timings.items())}).")
    students = df[df.stage.isin(("full", "chain")) & (df.status == "ok")].copy()
    rep.heading("Leaderboard (full-budget and chain students)")
    if not students.empty:
        hib = d.metric != "log_loss"
        students = students.sort_values("val_score", ascending=not hib)
        rep.table(students[[c for c in _COLS if c in students]].head(40),
                  flags={"auc": lambda v: v >= t["auc"] * 0.99} if "auc" in students else None)
        by_type = students.groupby("student")[["auc", "twin_auc"]].max()
        rep.bar_chart(list(by_type.index), {"soft-label student": by_type.auc.tolist(), "hard-label twin": by_type.twin_auc.tolist()},
                      "Best test AUC per student type", "test AUC", hlines={"teacher": t["auc"]})
    failed = df[df.status == "failed"]
    if not failed.empty:
        rep.heading("Failed configs")
        rep.table(failed[["method", "stage", "student", "temperature", "alpha", "error"]])
    rep.heading("Teachers and fusion")
    rep.text("Fusion weights and attention sharpness were fitted on validation rows; the best single teacher is "
             "listed for comparison.", note=True)
    rep.table(d.teacher_table)
    chain = df[df.stage == "chain"]
    if not chain.empty:
        rep.heading("Progressive chain")
        rep.text(d.chain_note)
        rep.table(chain[[c for c in ("chain_step", "student", "temperature", "alpha", "val_score", "chain_gain", "auc") if c in chain]])
    rep.heading("Effect of temperature and alpha")
    full = df[(df.stage.isin(("full", "screen"))) & (df.status == "ok")]
    for stage in ("full", "screen"):
        part = full[full.stage == stage]
        if part.empty or part.temperature.nunique() < 2 and part.alpha.nunique() < 2:
            continue
        series = {}
        for st, g in part.groupby("student"):
            agg = g.groupby("temperature").val_score.mean()
            series[st] = (agg.index.to_numpy(float), agg.to_numpy(float))
        rep.line_chart(series, f"Validation {d.metric} vs temperature ({stage} rung, mean over alpha)", "T", d.metric, markers=True)
        series = {}
        for st, g in part.groupby("student"):
            agg = g.groupby("alpha").val_score.mean()
            series[st] = (agg.index.to_numpy(float), agg.to_numpy(float))
        rep.line_chart(series, f"Validation {d.metric} vs alpha ({stage} rung, mean over T)", "alpha", d.metric, markers=True)
    if getattr(d, "divergence", None):
        rep.heading("Adaptive temperature: teacher-student divergence")
        temps = np.asarray(d.spec.temperatures, float)
        rep.line_chart({st: (temps, np.asarray(v)) for st, v in d.divergence.items()},
                       "KL(softened teacher at T || probe student), validation rows", "T", "KL", markers=True)
    return rep
