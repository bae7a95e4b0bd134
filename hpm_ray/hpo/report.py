"""The HTML report of an HPO run: summary table, coverage/width vs target, trial pinball, test fan charts."""

from __future__ import annotations

import numpy as np

from hpm_ray.report import Report

FAN_POINTS = 500  # the last test bars shown in a fan chart (all of them would be an unreadable smear)


def build_report(summary: dict, figures: dict, trials: dict, spec) -> Report:
    hs = list(summary["horizons"])
    rep = Report("Multi-horizon conformal quantile HPO",
                 f"run {summary['run_id']} · {len(hs)} horizon(s) · wall time {summary['wall_time_s']} s")
    rep.text("The search scored trials on purged walk-forward folds of train + validation (val pinball); CQR was fit on "
             "the calibration block; every other number is on the test block, which neither step saw. Naive: "
             "unconditional training quantiles; default LGBM: LightGBM defaults, same rounds budget, same CQR.", note=True)
    rows = []
    for h in hs:
        e, d = summary["horizons"][h], summary["details"][h]
        rows.append({"horizon": int(h), "trials": e["n_trials"], "pruned": e["n_pruned"], "failed": d["n_failed"],
                     "val pinball": e["val_pinball"], "test pinball": e["test_pinball"],
                     "naive": e["baselines"]["naive"], "default LGBM": e["baselines"]["default_lgbm"],
                     "cov 90 CQR": e["coverage_90"], "cov 90 ACI": e["coverage_90_aci"],
                     "cov 90 raw": d.get("coverage_90_raw"), "cov 50 CQR": e["coverage_50"],
                     "width 90": e["mean_width_90"], "crossing raw": e["crossing_rate_raw"], "crossing": e["crossing_rate"]})
    rep.heading("Summary")
    rep.table(rows, flags={
        "cov 90 CQR": lambda v: 0.87 <= v <= 0.93, "cov 90 ACI": lambda v: 0.87 <= v <= 0.93,
        "cov 50 CQR": lambda v: 0.45 <= v <= 0.55, "crossing": lambda v: v == 0,
    })
    levels = sorted({k.split("_")[1] for d in summary["details"].values() for k in d if k.startswith("coverage_") and k.endswith("_aci")})
    for lvl in levels:
        target = int(lvl) / 100
        rep.bar_chart([f"h={h}" for h in hs], {
            kind: [summary["details"][h].get(f"coverage_{lvl}{suffix}", np.nan) for h in hs]
            for kind, suffix in (("CQR", ""), ("ACI", "_aci"), ("uncalibrated", "_raw"))
        }, title=f"{lvl}% interval coverage on test vs target", ylabel="coverage", hlines={f"target {target:g}": target})
        rep.bar_chart([f"h={h}" for h in hs], {
            kind: [summary["details"][h].get(f"mean_width_{lvl}{suffix}", np.nan) for h in hs]
            for kind, suffix in (("CQR", ""), ("ACI", "_aci"))
        }, title=f"{lvl}% interval mean width (log return)", ylabel="width")
    for h in hs:
        recs = trials[int(h)]
        rep.heading(f"Horizon {h} bars")
        e = summary["horizons"][h]
        rep.text(f"best params: {', '.join(f'{k}={v:.4g}' for k, v in e['best_params'].items())}; "
                 f"rounds {summary['details'][h]['best_rounds']}; model {e['model_uri']}", note=True)
        series = {}
        for label, keep in (("completed", lambda r: not r.pruned), ("pruned by ASHA", lambda r: r.pruned)):
            pts = [(i + 1, r.best[1]) for i, r in enumerate(recs) if r.best is not None and keep(r)]
            if pts:
                series[label] = ([p[0] for p in pts], [p[1] for p in pts])
        if series:
            # Validation scores only: a test-block line here would invite comparing numbers from different data.
            rep.line_chart(series, title=f"best validation pinball by trial (h={h})", xlabel="trial", ylabel="pinball",
                           markers=True)
        fig = figures[int(h)]
        q, y = fig["q"][-FAN_POINTS:], np.asarray(fig["y"])[-FAN_POINTS:]
        n_q = q.shape[1]
        bands = [(q[:, i], q[:, n_q - 1 - i], f"{spec.quantiles[n_q - 1 - i] - spec.quantiles[i]:.0%} interval")
                 for i in range(n_q // 2)]
        x = np.arange(len(y))
        times = fig["time"][-FAN_POINTS:]
        ticks = {float(i): str(times[i])[:10] for i in np.linspace(0, len(y) - 1, 5).astype(int)}
        rep.fan_chart(x, bands, q[:, n_q // 2] if n_q % 2 else None, y,
                      title=f"test block: calibrated quantiles vs realised {h}-bar log return (last {len(y)} bars)",
                      ylabel="log return", x_labels=ticks)
    return rep
