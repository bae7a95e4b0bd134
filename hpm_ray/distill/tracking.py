"""MLflow for a distillation run: one parent run, one child run per config (logged from the driver),
the best student registered as a pyfunc classifier with its test metrics, outputs as artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

_CHILD_METRICS = (
    "val_score",
    "auc",
    "twin_auc",
    "accuracy",
    "f1",
    "log_loss",
    "brier",
    "ece",
    "ks",
    "fidelity",
    "kl_to_teacher",
    "size",
    "predict_ms_per_1k",
    "n_fits",
)


def log_distillation(d, out_dir: Path, register_name: str, experiment: str = "hpm-ray-distill") -> str:
    """Log ``d`` (a finished AutoDistiller) and its files in ``out_dir``; returns the registered model URI."""
    import mlflow

    from hpm_ray.distill.catalog import STUDENTS
    from hpm_ray.registry.gates import classifier_metrics
    from hpm_ray.registry.models import log_and_register
    from hpm_ray.registry.pyfunc import ClassifierPyfunc
    from hpm_ray.runtime import mlflow_experiment

    exp_id = mlflow_experiment(experiment)
    df = d.results_
    best = d.summary()
    with mlflow.start_run(experiment_id=exp_id, run_name=f"distill-{d.method}") as parent:
        mlflow.log_params(
            {
                "method": d.method,
                "selection_metric": d.metric,
                "teacher": d.teacher_name,
                "rows_train": len(d.splits.y_train),
                "seed": d.spec.seed,
                "max_configs": d.spec.max_configs,
            }
        )
        for _, row in df.iterrows():
            with mlflow.start_run(experiment_id=exp_id, run_name=row.key, nested=True):
                mlflow.log_params(
                    {
                        "student": row.student,
                        "temperature": row.temperature,
                        "alpha": row.alpha,
                        "stage": row.stage,
                        "status": row.status,
                        "params": row.params[:500],
                    }
                )
                mlflow.log_metrics(
                    {
                        k: float(row[k])
                        for k in _CHILD_METRICS
                        if k in row
                        and row[k] is not None
                        and isinstance(row[k], (int, float))
                        and math.isfinite(row[k])
                    }
                )
        metrics = {f"best_{k}": v for k, v in best["best"].items() if isinstance(v, float)}
        metrics.update({f"teacher_{k}": v for k, v in best["teacher"].items() if isinstance(v, float)})
        metrics.update({"wall_time_s": best["wall_time_s"], "n_fits": best["n_fits"]})
        if best["hard_label_twin"]["auc"] is not None:
            metrics["twin_auc"] = best["hard_label_twin"]["auc"]
        mlflow.log_metrics(metrics)
        # Everything the quality gates read (accuracy, macro F1, per-class precision/recall, mean confidence),
        # measured on the test split the selection never saw, plus the distillation's own headline numbers.
        classes = list(d.splits.classes)
        y_test = d.splits.classes[d.splits.y_test]  # codes -> the labels the served model returns
        model_metrics = classifier_metrics(y_test, d.predict_proba(d.splits.X_test), classes)
        model_metrics.update(
            {
                k: best["best"][k]
                for k in ("auc", "log_loss", "ks", "fidelity", "ece", "brier")
                if best["best"].get(k) is not None
            }
        )
        pkg = STUDENTS[best["best"]["student"]].requires  # an optional student's package is served with it
        mv = log_and_register(
            ClassifierPyfunc(d.best_model(), d.splits.X_train, classes),
            register_name,
            kind="classifier",
            metrics=model_metrics,
            input_example=d.splits.X_train,
            tags={"hpm_ray.student": best["best"]["student"]},
            reference=d.splits.X_test,  # held out: scores on training rows are over-confident (drift/checks.py)
            extra_packages=(pkg.distribution,) if pkg else (),
        )
        uri = f"models:/{register_name}/{mv.version}"
        summary_path = out_dir / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["best"]["model_uri"] = uri
        summary_path.write_text(json.dumps(summary, indent=2))
        for name in ("results.csv", "summary.json", "report.html"):
            if (out_dir / name).is_file():
                mlflow.log_artifact(str(out_dir / name))
        if (out_dir / "exports").is_dir():  # scorecard tables / rules of the interpretable presets
            mlflow.log_artifacts(str(out_dir / "exports"), artifact_path="exports")
        mlflow.set_tag("hpm_ray.parent_run", parent.info.run_id)
    return uri
