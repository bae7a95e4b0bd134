"""Readable artefacts of the interpretable presets, and scorers that use nothing but the artefact.

- Scorecard -> points table: score = base points + the points of the bin each feature falls in;
  P(positive) = 1 / (1 + exp(-score / factor)) with factor = pdo / ln 2, so every ``pdo`` points double
  the odds. Numeric bins hold lower < x <= upper (empty bound = open); categorical bins one category; the
  ``missing`` bin takes missing values and unseen categories.
- Depth-4 tree -> rules: one rule per leaf, {conditions, probability, rows}; a row matches exactly one rule.
- EBM -> shape tables: per term (a feature, or a pair) its bins and a table of log-odds scores;
  P(positive) = 1 / (1 + exp(-(intercept + the score of every term's cell))).
:func:`score_scorecard`, :func:`score_rules` and :func:`score_ebm` reproduce the model's ``predict_proba``
from the exported JSON alone (tested to 1e-9), which is what makes the export trustworthy.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpm_ray.distill.ebm import EBMStudent
from hpm_ray.distill.presets import ScorecardStudent, Tree4Student, _numeric
from hpm_ray.errors import DataError

DEFAULT_PDO = 20.0


# --- scorecard -------------------------------------------------------------------------------------------
def scorecard(model: ScorecardStudent, pdo: float = DEFAULT_PDO) -> dict[str, Any]:
    """The fitted scorecard as a JSON-ready dict (bounds as numbers or null for open ends)."""
    if len(model.classes_) != 2:
        raise DataError(f"a points table needs a binary target; this scorecard has {len(model.classes_)} classes")
    factor = pdo / math.log(2.0)
    coef, off = model.model_.coef_[0] * factor, model.binner_.offsets_
    features = []
    for j, f in enumerate(model.binner_.features_):
        pts = coef[off[j] : off[j + 1]].tolist()
        if f["type"] == "numeric":
            bounds = [None, *f["edges"], None]
            bins = [{"lower": bounds[i], "upper": bounds[i + 1], "points": pts[i]} for i in range(len(bounds) - 1)]
        else:
            bins = [{"category": c, "points": p} for c, p in zip(f["categories"], pts)]
        bins.append({"missing": True, "points": pts[-1]})
        features.append({"feature": f["feature"], "type": f["type"], "bins": bins})
    return {
        "kind": "scorecard",
        "points_to_double_odds": pdo,
        "factor": factor,
        "base_points": float(model.model_.intercept_[0] * factor),
        "link": "P(positive) = 1 / (1 + exp(-score / factor)), score = base_points + sum of bin points",
        "features": features,
    }


def _label(b: dict) -> str:
    if b.get("missing"):
        return "missing / other"
    if "category" in b:
        return f"= {b['category']}"
    lo, hi = b["lower"], b["upper"]
    if lo is None:
        return f"<= {hi:g}"
    return f"> {lo:g}" if hi is None else f"({lo:g}, {hi:g}]"


def points_table(card: dict[str, Any]) -> pd.DataFrame:
    """One row per bin (feature, bin, lower, upper, category, points), the base points first."""
    rows = [
        {
            "feature": "(base points)",
            "bin": "",
            "lower": np.nan,
            "upper": np.nan,
            "category": "",
            "points": card["base_points"],
        }
    ]
    for f in card["features"]:
        for b in f["bins"]:
            rows.append(
                {
                    "feature": f["feature"],
                    "bin": _label(b),
                    "lower": np.nan if b.get("lower") is None else b["lower"],
                    "upper": np.nan if b.get("upper") is None else b["upper"],
                    "category": b.get("category", ""),
                    "points": b["points"],
                }
            )
    return pd.DataFrame(rows)


def score_scorecard(card: dict[str, Any], X: pd.DataFrame) -> np.ndarray:
    """(n, 2) class probabilities computed from the exported scorecard only."""
    X = pd.DataFrame(X).set_axis([str(c) for c in pd.DataFrame(X).columns], axis=1)
    score = np.full(len(X), float(card["base_points"]))
    for f in card["features"]:
        col = X[f["feature"]]
        if f["type"] == "numeric":
            x = _numeric(col)
            missing = np.isnan(x)
        else:
            x = _text(col)
            known = {b["category"] for b in f["bins"] if "category" in b}
            missing = np.array([v is None or v not in known for v in x], dtype=bool)
        for b in f["bins"]:
            if b.get("missing"):
                hit = missing
            elif "category" in b:
                hit = x == b["category"]
            else:
                lo = -np.inf if b["lower"] is None else b["lower"]
                hi = np.inf if b["upper"] is None else b["upper"]
                with np.errstate(invalid="ignore"):
                    hit = ~missing & (x > lo) & (x <= hi)
            score += np.where(hit, b["points"], 0.0)
    p = 1.0 / (1.0 + np.exp(-score / card["factor"]))
    return np.column_stack([1.0 - p, p])


# --- rules -----------------------------------------------------------------------------------------------
def tree_rules(model: Tree4Student) -> list[dict[str, Any]]:
    """One rule per leaf: {conditions, probability (binary: of class 1), class_probabilities, rows}."""
    t = model.tree_model_.tree_
    values = model.leaf_values()
    names = list(model.feature_names_in_)
    rules: list[dict[str, Any]] = []

    def condition(node: int, left: bool) -> dict[str, Any]:
        f, thr = names[t.feature[node]], float(t.threshold[node])
        missing = bool(t.missing_go_to_left[node]) == left
        if f in model.categories_:
            cats = model.categories_[f]
            chosen = [c for i, c in enumerate(cats) if (i <= thr) == left]
            return {"feature": f, "in": chosen, "missing": missing}
        return {"feature": f, "op": "<=" if left else ">", "threshold": thr, "missing": missing}

    def tighten(conds: list[dict], new: dict) -> list[dict]:
        """A deeper split on the same feature and side replaces the looser one (x <= 1.5 AND x <= 0.5 -> x <= 0.5)."""
        for i, c in enumerate(conds):
            if c["feature"] == new["feature"] and c.get("op") == new.get("op"):
                merged = {**new, "missing": c["missing"] and new["missing"]}
                if "in" in new:
                    merged["in"] = [v for v in new["in"] if v in c["in"]]
                return [*conds[:i], *conds[i + 1 :], merged]
        return [*conds, new]

    def walk(node: int, conds: list[dict]) -> None:
        if t.children_left[node] == -1:
            p = values[node]
            rules.append(
                {
                    "conditions": conds,
                    "probability": float(p[1]) if len(p) == 2 else None,
                    "class_probabilities": p.tolist(),
                    "rows": float(t.weighted_n_node_samples[node]),
                }
            )
            return
        walk(int(t.children_left[node]), tighten(conds, condition(node, True)))
        walk(int(t.children_right[node]), tighten(conds, condition(node, False)))

    walk(0, [])
    return rules


def _text(col: pd.Series) -> np.ndarray:
    """Category values as strings, missing as None (the form the exports store categories in)."""
    return np.array([None if pd.isna(v) else str(v) for v in col], dtype=object)


def _holds(cond: dict[str, Any], col: pd.Series, seen: set) -> np.ndarray:
    """Does each row satisfy one condition? Missing values, and categories the tree never saw, follow ``missing``."""
    if "in" in cond:
        x = _text(col)
        missing = np.array([v is None or v not in seen for v in x], dtype=bool)
        return np.where(missing, cond["missing"], np.isin(x, cond["in"]))
    x = _numeric(col)
    with np.errstate(invalid="ignore"):
        inside = x <= cond["threshold"] if cond["op"] == "<=" else x > cond["threshold"]
    return np.where(np.isnan(x), cond["missing"], inside)


def score_rules(rules: list[dict[str, Any]], X: pd.DataFrame) -> np.ndarray:
    """(n, k) class probabilities computed from the exported rules only; every row must match one rule."""
    X = pd.DataFrame(X).set_axis([str(c) for c in pd.DataFrame(X).columns], axis=1)
    seen: dict[str, set] = {}  # the two sides of a split list every training category between them
    for r in rules:
        for c in r["conditions"]:
            if "in" in c:
                seen.setdefault(c["feature"], set()).update(c["in"])
    out = np.full((len(X), len(rules[0]["class_probabilities"])), np.nan)
    for r in rules:
        hit = np.ones(len(X), dtype=bool)
        for c in r["conditions"]:
            hit &= _holds(c, X[c["feature"]], seen.get(c["feature"], set()))
        out[hit] = r["class_probabilities"]
    if np.isnan(out).any():
        raise DataError(f"{int(np.isnan(out).any(axis=1).sum())} row(s) match no rule")
    return out


def rules_text(rules: list[dict[str, Any]], positive: str = "1") -> str:
    """The rules as lines a person reads: IF ... AND ... THEN P(positive) = p  [rows]."""
    lines = []
    for r in rules:
        parts = []
        for c in r["conditions"]:
            body = (
                f"{c['feature']} in {{{', '.join(map(str, c['in']))}}}"
                if "in" in c
                else f"{c['feature']} {c['op']} {c['threshold']:g}"
            )
            parts.append(body + (" (or missing)" if c["missing"] else ""))
        then = (
            f"P({positive}) = {r['probability']:.4f}"
            if r["probability"] is not None
            else "P = [" + ", ".join(f"{p:.3f}" for p in r["class_probabilities"]) + "]"
        )
        lines.append(f"IF {' AND '.join(parts) or 'always'} THEN {then}  [{r['rows']:,.0f} rows]")
    return "\n".join(lines)


def rules_table(rules: list[dict[str, Any]]) -> pd.DataFrame:
    """The rules as report rows (rule text, probability, rows), riskiest first."""
    rows = [
        {
            "rule": rules_text([r]).split(" THEN ")[0].removeprefix("IF "),
            "probability": r["probability"] if r["probability"] is not None else max(r["class_probabilities"]),
            "rows": r["rows"],
        }
        for r in rules
    ]
    return pd.DataFrame(rows).sort_values("probability", ascending=False, ignore_index=True)


# --- EBM shape tables ------------------------------------------------------------------------------------
def ebm_shapes(model: EBMStudent) -> dict[str, Any]:
    """The fitted binary EBM as a JSON-ready dict: its intercept and, per term, the bins of its features and
    its score table (log-odds; one axis per feature of the term).

    A numeric feature's bins: index 0 = missing, then ``lower <= x < upper`` between consecutive ``cuts``
    (open at both ends), then one for values EBM could not read. A categorical feature's: 0 = missing, its
    categories' indices, then one for categories unseen in training.
    """
    if len(model.classes_) != 2:
        raise DataError(f"shape tables need a binary target; this EBM has {len(model.classes_)} classes")
    m = model.model_
    terms = []
    for name, feats, scores, importance in zip(m.term_names_, m.term_features_, m.term_scores_, m.term_importances()):
        axes = []
        for f in feats:
            levels = m.bins_[f]
            level = levels[min(len(levels), len(feats)) - 1]  # pairs use the coarser interaction bins
            feature = str(m.feature_names_in_[f])
            if isinstance(level, dict):
                axes.append(
                    {
                        "feature": feature,
                        "type": "categorical",
                        "categories": {str(k): int(v) for k, v in level.items()},
                    }
                )
            else:
                axes.append({"feature": feature, "type": "numeric", "cuts": np.asarray(level, dtype=float).tolist()})
        terms.append(
            {"term": str(name), "importance": float(importance), "axes": axes, "scores": np.asarray(scores).tolist()}
        )
    return {
        "kind": "ebm",
        "intercept": float(np.ravel(m.intercept_)[0]),
        "link": "P(positive) = 1 / (1 + exp(-(intercept + sum over terms of the score of the row's cell)))",
        "terms": terms,
    }


def _ebm_bin(axis: dict[str, Any], col: pd.Series) -> np.ndarray:
    """Cell index of every value on one axis of a term's score table."""
    if axis["type"] == "categorical":
        cats = axis["categories"]
        unseen = max(cats.values(), default=0) + 1
        return np.array([0 if v is None else cats.get(v, unseen) for v in _text(col)], dtype=np.int64)
    x = _numeric(col)
    cuts = np.asarray(axis["cuts"], dtype=float)
    return np.where(np.isnan(x), 0, np.searchsorted(cuts, x, side="right") + 1)


def score_ebm(shapes: dict[str, Any], X: pd.DataFrame) -> np.ndarray:
    """(n, 2) class probabilities computed from the exported shape tables only."""
    X = pd.DataFrame(X).set_axis([str(c) for c in pd.DataFrame(X).columns], axis=1)
    score = np.full(len(X), float(shapes["intercept"]))
    for t in shapes["terms"]:
        cells = tuple(_ebm_bin(a, X[a["feature"]]) for a in t["axes"])
        score += np.asarray(t["scores"], dtype=float)[cells]
    p = 1.0 / (1.0 + np.exp(-score))
    return np.column_stack([1.0 - p, p])


def _ebm_label(axis: dict[str, Any], i: int) -> str:
    n_cells = len(axis["cuts"]) + 3 if axis["type"] == "numeric" else max(axis["categories"].values(), default=0) + 2
    if i == 0:
        return "missing"
    if i == n_cells - 1:
        return "other / unseen"
    if axis["type"] == "categorical":
        return "= " + ", ".join(k for k, v in axis["categories"].items() if v == i)
    cuts = axis["cuts"]
    lo, hi = (cuts[i - 2] if i >= 2 else None), (cuts[i - 1] if i - 1 < len(cuts) else None)
    if lo is None:
        return f"< {hi:g}"
    return f">= {lo:g}" if hi is None else f"[{lo:g}, {hi:g})"


def shape_table(shapes: dict[str, Any]) -> pd.DataFrame:
    """Main effects as rows a person reads: (term, importance, bin, score), most important term first.

    Pairwise terms stay in the JSON (a 2-D table each); their importance is listed with an empty bin.
    """
    rows = [{"term": "(intercept)", "importance": np.nan, "bin": "", "score": shapes["intercept"]}]
    for t in sorted(shapes["terms"], key=lambda t: -t["importance"]):
        if len(t["axes"]) != 1:
            rows.append({"term": t["term"], "importance": t["importance"], "bin": "(pair: see JSON)", "score": np.nan})
            continue
        for i, v in enumerate(t["scores"]):
            rows.append(
                {"term": t["term"], "importance": t["importance"], "bin": _ebm_label(t["axes"][0], i), "score": v}
            )
    return pd.DataFrame(rows)


# --- files -----------------------------------------------------------------------------------------------
def readable(model) -> pd.DataFrame | None:
    """The artefact a person reads in the report: the points table or the rules; None for other students."""
    if isinstance(model, ScorecardStudent) and len(model.classes_) == 2:
        return points_table(scorecard(model))[["feature", "bin", "points"]]  # edges are in the bin label
    if isinstance(model, Tree4Student):
        return rules_table(tree_rules(model))
    if isinstance(model, EBMStudent) and len(model.classes_) == 2:
        return shape_table(ebm_shapes(model))
    return None


def _readable_form(model):
    """``(file suffixes, JSON content, writer of the second file)`` of a student with a readable form, else None."""
    if isinstance(model, ScorecardStudent) and len(model.classes_) == 2:
        return (".json", ".csv"), scorecard(model), lambda card, path: points_table(card).to_csv(path, index=False)
    if isinstance(model, Tree4Student):
        return ("_rules.json", "_rules.txt"), tree_rules(model), lambda r, path: path.write_text(rules_text(r) + "\n")
    if isinstance(model, EBMStudent) and len(model.classes_) == 2:
        shapes = ebm_shapes(model)
        return ("_shapes.json", "_shapes.csv"), shapes, lambda sh, path: shape_table(sh).to_csv(path, index=False)
    return None


def write_artifacts(model, out_dir: str | Path, stem: str) -> list[Path]:
    """Write the model's readable export (scorecard CSV + JSON, rules JSON + text, EBM shapes JSON + CSV) and
    log it to MLflow when a run is active. Returns the files written (none for students without a readable form)."""
    out = Path(out_dir)
    files: list[Path] = []
    export = _readable_form(model)
    if export is not None:
        suffixes, content, second = export
        files += [out / f"{stem}{suffixes[0]}", out / f"{stem}{suffixes[1]}"]
        out.mkdir(parents=True, exist_ok=True)
        files[0].write_text(json.dumps(content, indent=2))
        second(content, files[1])
    if files and "mlflow" in sys.modules:  # no mlflow import, no active run: skip the import cost
        import mlflow

        if mlflow.active_run() is not None:
            for f in files:
                mlflow.log_artifact(str(f), artifact_path="exports")
    return files
