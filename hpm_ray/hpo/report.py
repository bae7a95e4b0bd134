"""The HTML report of an HPO run: summary table, coverage/width vs target (marginal, by volatility tercile and
rolling over 30 days), trial pinball, test fan charts."""

from __future__ import annotations

import numpy as np

from hpm_ray.hpo.learners import get_learner
from hpm_ray.metrics import rolling_coverage
from hpm_ray.report import Report

FAN_POINTS = 500  # the last test bars shown in a fan chart (all of them would be an unreadable smear)
BAND_90 = (0.87, 0.93)  # the quality band of 90 % coverage (marginal, per tercile, rolling)
TERCILES = ("calm", "mid", "volatile")


def _fmt_terciles(v) -> str:
    return " / ".join("-" if x is None else f"{x:.3f}" for x in (v or []))


def rolling_section(rep: Report, fig: dict, h, days: int) -> None:
    """Rolling ``days``-day coverage of the shipped and split-CQR intervals along the test block, with the band."""
    window, y = fig.get("window"), np.asarray(fig["y"])
    if not window or window > len(y):
        rep.text(f"h={h}: the test block is shorter than {days} days; no rolling coverage.", note=True)
        return
    series, hl = {}, {}
    for k, (lo, hi) in fig["shipped"].items():
        x = np.arange(window - 1, len(y))
        series[f"{k}% {fig['method']}"] = (x, rolling_coverage(y, lo, hi, window))
        series[f"{k}% split CQR"] = (x, rolling_coverage(y, *fig["cqr"][k], window))
        hl[f"nominal {int(k) / 100:g}"] = int(k) / 100
    hl.update({f"90% band {BAND_90[0]:g}": BAND_90[0], f"90% band {BAND_90[1]:g}": BAND_90[1]})
    times = fig["time"]
    ticks = {float(i): str(times[i])[:10] for i in np.linspace(0, len(y) - 1, 5).astype(int)}
    rep.line_chart(
        series, title=f"rolling {days}-day coverage on test (h={h})", ylabel="coverage", hlines=hl, x_labels=ticks
    )


SETTING = {"rolling": "N={:g}", "ewma": "decay {:g}"}


def skill_statement(h, entry: dict, level: float = 0.05) -> str:
    """One plain sentence per horizon: over which baselines the tuned forecaster has skill on test, and which not.

    Examples
    --------
    >>> e = {"baselines": {"naive": {"dm_stat": -0.4, "dm_pvalue": 0.7}, "ewma": {"dm_stat": -2.5, "dm_pvalue": 0.01}}}
    >>> skill_statement(48, e)
    'h=48: no evidence of skill over naive; skill over ewma (two-sided Diebold-Mariano test, 5 % level).'
    """
    from hpm_ray.hpo.baselines import skill

    groups: dict[str, list[str]] = {"none": [], "skill": [], "worse": []}
    for name, be in entry["baselines"].items():
        groups[skill(be["dm_stat"], be["dm_pvalue"], level)].append(name)
    parts = [
        text.format(", ".join(names))
        for key, text in (
            ("none", "no evidence of skill over {}"),
            ("skill", "skill over {}"),
            ("worse", "the tuned forecaster loses to {}"),
        )
        if (names := groups[key])
    ]
    return f"h={h}: {'; '.join(parts)} (two-sided Diebold-Mariano test, {level * 100:g} % level)."


def skill_rows(h, entry: dict, tuned: str) -> list[dict]:
    """The tuned forecaster and each baseline at one horizon: validation and test pinball (per quantile), DM."""
    ships = entry.get("registered_family")
    rows = [
        {
            "h": int(h),
            "forecaster": f"tuned {tuned.upper()}",
            "val pinball": entry["val_pinball"],
            "test pinball": entry["tuned_test_pinball"],
            **{f"q{k}": v for k, v in entry["tuned_test_pinball_by_quantile"].items()},
            "DM": "",
            "p": "",
            "ships": ships == tuned,
        }
    ]
    for name, be in entry["baselines"].items():
        setting = be.get("setting")
        label = name if setting is None or name not in SETTING else f"{name} ({SETTING[name].format(setting)})"
        rows.append(
            {
                "h": int(h),
                "forecaster": label,
                "val pinball": be.get("val_pinball"),
                "test pinball": be["test_pinball"],
                **{f"q{k}": v for k, v in be["test_pinball_by_quantile"].items()},
                "DM": be["dm_stat"],
                "p": be["dm_pvalue"],
                "ships": ships == name,
            }
        )
    return rows


def family_section(rep: Report, summary: dict, tuned: str) -> None:
    """Which family ships per horizon (chosen on validation) and the test-block skill of the tuned forecaster."""
    rep.heading("What ships, and skill against baselines")
    rep.text(
        "Validation pinball: every forecaster scored on the search's purged walk-forward folds of the validation "
        "block (baselines' statistics from each fold's training rows; rolling window and EWMA decay chosen there). "
        "The tuned model's is the best of its trials and report points, so it is optimistic: a baseline that beats "
        "it on validation beats the tuned model. The family with the lowest validation pinball ships; a family "
        "that needs state beyond one feature row (rolling, EWMA, HAR, GARCH) cannot be registered, and the best "
        f"servable one (tuned {tuned.upper()} or naive) is registered instead. Test columns: pinball on the test block, per "
        "quantile; DM: Diebold-Mariano statistic of the tuned forecaster (CQR-calibrated) against the baseline, "
        "HAC variance with lag h-1, two-sided p, 5 % per test, no correction for the number of tests; negative "
        f"favours the tuned forecaster. Default {tuned.upper()} has no validation score (it is not searched).",
        note=True,
    )
    rows = []
    for h, e in summary["horizons"].items():
        rep.text(f"h={h}: ships {e['registered_family']}; {e['family_reason']}.")
        rep.text(skill_statement(h, e))
        rows.extend(skill_rows(h, e, tuned))
    rep.table(rows)


def build_report(summary: dict, figures: dict, trials: dict, spec, rolling_days: int = 30) -> Report:
    hs, learner = list(summary["horizons"]), get_learner(spec.learner)
    rep = Report(
        "Multi-horizon conformal quantile HPO",
        f"run {summary['run_id']} · {len(hs)} horizon(s) · wall time {summary['wall_time_s']} s",
    )
    rep.text(
        "The search scored trials on purged walk-forward folds of train + validation (val pinball, the tuned model's); "
        "CQR was fit on the calibration block; every other number is on the test block, which neither step saw. "
        "Ships: the family chosen on validation and registered (next section); test pinball and coverage are its "
        f"own. Naive: unconditional training quantiles; default {learner.short.upper()}: {learner.title} defaults, "
        "same rounds budget, same CQR. The shipped interval (method and step chosen on the calibration block) "
        "updates online on test as each row's label matures h bars later; the registered model's predict gives the "
        "static split-CQR interval, and the A/B app (hpm-ray serve) serves a PID interval beside it, continued "
        "from the calibration block with the realised values posted as feedback.",
        note=True,
    )
    rows = []
    for h in hs:
        e, d = summary["horizons"][h], summary["details"][h]
        rows.append(
            {
                "horizon": int(h),
                "ships": e["registered_family"],
                "trials": e["n_trials"],
                "pruned": e["n_pruned"],
                "failed": d["n_failed"],
                "val pinball": e["val_pinball"],
                "test pinball": e["test_pinball"],
                "tuned test pinball": e["tuned_test_pinball"],
                "naive": e["baselines"]["naive"]["test_pinball"],
                f"default {learner.short.upper()}": e["baselines"][f"default_{learner.short}"]["test_pinball"],
                "interval": d.get("interval_choice", e["interval_method"]),
                "cov 90": e["coverage_90"],
                "cov 90 by vol tercile": _fmt_terciles(e["coverage_90_by_vol_tercile"]),
                "longest miss run 90": e["longest_miss_run_90"],
                f"worst {rolling_days}d cov 90": d.get(f"worst_{rolling_days}d_coverage_90"),
                f"worst {rolling_days}d cov 90 CQR": d.get(f"worst_{rolling_days}d_coverage_90_cqr"),
                "cov 90 CQR": e["coverage_90_cqr"],
                "cov 90 ACI": e["coverage_90_aci"],
                "cov 90 raw": d.get("coverage_90_raw"),
                "cov 50": e["coverage_50"],
                "width 90": e["mean_width_90"],
                "crossing raw": e["crossing_rate_raw"],
                "crossing": e["crossing_rate"],
            }
        )
    rep.heading("Summary")
    in_band = lambda v: BAND_90[0] <= v <= BAND_90[1]
    rep.table(
        rows,
        flags={
            "cov 90": in_band,
            "cov 90 CQR": in_band,
            "cov 90 ACI": in_band,
            "cov 50": lambda v: 0.45 <= v <= 0.55,
            "crossing": lambda v: v == 0,
        },
    )
    levels = sorted(
        {
            k.split("_")[1]
            for d in summary["details"].values()
            for k in d
            if k.startswith("coverage_") and k.endswith("_aci")
        }
    )
    for lvl in levels:
        target = int(lvl) / 100
        rep.bar_chart(
            [f"h={h}" for h in hs],
            {
                kind: [summary["details"][h].get(f"coverage_{lvl}{suffix}", np.nan) for h in hs]
                for kind, suffix in (("shipped", ""), ("split CQR", "_cqr"), ("ACI", "_aci"), ("uncalibrated", "_raw"))
            },
            title=f"{lvl}% interval coverage on test vs target",
            ylabel="coverage",
            hlines={f"target {target:g}": target},
        )
        rep.bar_chart(
            [f"h={h}" for h in hs],
            {
                kind: [summary["details"][h].get(f"mean_width_{lvl}{suffix}", np.nan) for h in hs]
                for kind, suffix in (("shipped", ""), ("split CQR", "_cqr"), ("ACI", "_aci"))
            },
            title=f"{lvl}% interval mean width (log return)",
            ylabel="width",
        )
    family_section(rep, summary, learner.short)
    rep.heading("Coverage by volatility tercile")
    rep.text(
        f"Terciles of {spec.interval_vol} (known at prediction time), cut on the training block; a regime the "
        "training block rarely saw leaves a tercile with few test rows, and one the calibration block lacks (cal "
        "rows 0) starts its PID tracker from the pooled quantile: nothing chosen on calibration can target it. "
        "cov 90 SE: standard error of the shipped interval's coverage, Bartlett HAC with lag h-1 over the test "
        "block (misses of overlapping h-bar targets come in runs, so the binomial SE would be several times too "
        "small); read a tercile against the band with about two of these either side.",
        note=True,
    )
    cond_rows, cats, shipped90, cqr90 = [], [], [], []
    for h in hs:
        d = summary["details"][h]
        for g, name in enumerate(TERCILES):
            cond_rows.append(
                {
                    "horizon": int(h),
                    "tercile": name,
                    "cal rows": d["calibration_rows_by_vol_tercile"][g],
                    "test rows": d["test_rows_by_vol_tercile"][g],
                    **{
                        f"cov {lvl}{label}": (d.get(f"coverage_{lvl}{suffix}_by_vol_tercile") or [None] * 3)[g]
                        for lvl in levels
                        for label, suffix in (("", ""), (" CQR", "_cqr"), (" ACI", "_aci"))
                    },
                    "cov 90 SE": (d.get("coverage_90_by_vol_tercile_se") or [None] * 3)[g],
                    "width 90": (d.get("mean_width_90_by_vol_tercile") or [None] * 3)[g],
                }
            )
            cats.append(f"h={h} {name}")
            shipped90.append((d.get("coverage_90_by_vol_tercile") or [np.nan] * 3)[g])
            cqr90.append((d.get("coverage_90_cqr_by_vol_tercile") or [np.nan] * 3)[g])
    rep.table(cond_rows, flags={"cov 90": in_band, "cov 90 CQR": in_band, "cov 90 ACI": in_band})
    if "90" in levels:
        rep.bar_chart(
            cats,
            {
                "shipped": [np.nan if v is None else v for v in shipped90],
                "split CQR": [np.nan if v is None else v for v in cqr90],
            },
            title="90% coverage by volatility tercile",
            ylabel="coverage",
            hlines={"target 0.9": 0.9, f"band {BAND_90[0]:g}": BAND_90[0], f"band {BAND_90[1]:g}": BAND_90[1]},
        )
    for h in hs:
        recs = trials[int(h)]
        rep.heading(f"Horizon {h} bars")
        e = summary["horizons"][h]
        rep.text(
            f"best params: {', '.join(f'{k}={v:.4g}' for k, v in e['best_params'].items())}; "
            f"rounds {summary['details'][h]['best_rounds']}; model {e['model_uri']}; shipped interval "
            f"{summary['details'][h]['interval_choice']} (calibration interval score per candidate: "
            f"{', '.join(f'{k} {v:.4g}' for k, v in summary['details'][h]['interval_candidates_calibration_score'].items())})",
            note=True,
        )
        series = {}
        for label, keep in (("completed", lambda r: not r.pruned), ("pruned by ASHA", lambda r: r.pruned)):
            pts = [(i + 1, r.best[1]) for i, r in enumerate(recs) if r.best is not None and keep(r)]
            if pts:
                series[label] = ([p[0] for p in pts], [p[1] for p in pts])
        if series:
            # Validation scores only: a test-block line here would invite comparing numbers from different data.
            rep.line_chart(
                series,
                title=f"best validation pinball by trial (h={h})",
                xlabel="trial",
                ylabel="pinball",
                markers=True,
            )
        fig = figures[int(h)]
        rolling_section(rep, fig, h, rolling_days)
        q, y = fig["q"][-FAN_POINTS:], np.asarray(fig["y"])[-FAN_POINTS:]
        n_q = q.shape[1]
        bands = [
            (q[:, i], q[:, n_q - 1 - i], f"{spec.quantiles[n_q - 1 - i] - spec.quantiles[i]:.0%} interval")
            for i in range(n_q // 2)
        ]
        x = np.arange(len(y))
        times = fig["time"][-FAN_POINTS:]
        ticks = {float(i): str(times[i])[:10] for i in np.linspace(0, len(y) - 1, 5).astype(int)}
        rep.fan_chart(
            x,
            bands,
            q[:, n_q // 2] if n_q % 2 else None,
            y,
            title=f"test block: calibrated quantiles vs realised {h}-bar log return (last {len(y)} bars)",
            ylabel="log return",
            x_labels=ticks,
        )
    return rep
