"""The drift check's outputs: ``drift.json`` (machine-readable) and ``drift.html`` (self-contained)."""

from __future__ import annotations

import json
from pathlib import Path

from hpm_ray.drift.checks import DriftResult


def verdict(result: DriftResult) -> str:
    """One line: the decision and the features that drove it."""
    drifted = [f.feature for f in result.features if f.drifted]
    if result.prediction is not None and result.prediction.drifted:
        drifted.append("prediction")
    if not drifted:
        return f"no drift: max PSI {result.max_psi:.3f} < {result.threshold:g} over {result.n_current} served rows"
    return (
        f"DRIFT: PSI >= {result.threshold:g} on {len(drifted)} of {len(result.features) + (result.prediction is not None)} "
        f"({', '.join(drifted[:6])}{', ...' if len(drifted) > 6 else ''}); max PSI {result.max_psi:.3f}"
    )


def write_report(result: DriftResult, meta: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write both files into ``out_dir``; ``meta`` (model, version, window, ...) goes into each."""
    from hpm_ray.report import Report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "verdict": verdict(result), **result.to_dict()}
    json_path = out / "drift.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    rows = [f for f in result.features] + ([result.prediction] if result.prediction else [])
    r = Report(
        f"Drift: {meta.get('model', '')} v{meta.get('version', '')}",
        f"{result.n_current} served rows vs {result.n_reference} training reference rows; PSI threshold {result.threshold:g}",
    )
    r.heading("Verdict").text(verdict(result))
    r.text(
        "PSI: population stability index (numeric features on reference deciles, categorical on categories). "
        "KS: two-sample Kolmogorov-Smirnov statistic and p-value (numeric only). The prediction row compares the "
        "model's scores on the reference with its scores on the served rows it answered.",
        note=True,
    )
    r.bar_chart(
        [f.feature for f in rows],
        {"PSI": [f.psi for f in rows]},
        "PSI per feature",
        "PSI",
        hlines={"threshold": result.threshold},
    )
    r.table(
        [
            {
                "feature": f.feature,
                "kind": f.kind,
                "PSI": round(f.psi, 4),
                "KS": None if f.ks is None else round(f.ks, 4),
                "KS p-value": None if f.ks_pvalue is None else f"{f.ks_pvalue:.2g}",
                "drifted": f.drifted,
            }
            for f in rows
        ],
        flags={"PSI": lambda v: v < result.threshold},
    )
    html_path = r.save(out / "drift.html")
    return json_path, Path(html_path)
