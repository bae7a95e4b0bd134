"""The drift check's outputs: ``drift.json`` (machine-readable) and ``drift.html`` (self-contained)."""

from __future__ import annotations

import json
from pathlib import Path

from hpm_ray.drift.checks import DriftResult


def verdict(result: DriftResult) -> str:
    """One line: the decision, the rule behind it and the features that drove it."""
    drifted = [f.feature for f in result.checked if f.drifted]
    rule = f"BH-significant at FDR {result.fdr:g} with PSI >= {result.threshold:g}"
    if not drifted:
        return f"no drift: no feature {rule}; max PSI {result.max_psi:.3f} over {result.n_current} served rows"
    return (
        f"DRIFT: {rule} on {len(drifted)} of {len(result.checked)} "
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
    rows = result.checked
    r = Report(
        f"Drift: {meta.get('model', '')} v{meta.get('version', '')}",
        f"{result.n_current} served rows vs {result.n_reference} training reference rows; PSI threshold "
        f"{result.threshold:g}, FDR {result.fdr:g}",
    )
    r.heading("Verdict").text(verdict(result))
    r.text(
        "PSI: population stability index (numeric features on reference deciles, categorical on categories; "
        "one bin for unseen categories, one for missing values). Tests: two-sample Kolmogorov-Smirnov (numeric), "
        "chi-square (categorical), Fisher's exact on the missing rate; q: the smallest Benjamini-Hochberg adjusted "
        "p-value of the feature's tests. A feature drifts when q <= FDR and PSI >= threshold. The prediction row "
        "compares the model's scores on the reference with its scores on the served rows it answered.",
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
                "chi2 p-value": None if f.chi2_pvalue is None else f"{f.chi2_pvalue:.2g}",
                "missing ref/served": f"{f.missing_reference:.1%} / {f.missing_current:.1%}",
                "q": None if f.q_value is None else f"{f.q_value:.2g}",
                "drifted": f.drifted,
            }
            for f in rows
        ],
        flags={"PSI": lambda v: v < result.threshold},
    )
    html_path = r.save(out / "drift.html")
    return json_path, Path(html_path)
