"""Progressive distillation chain: teacher -> assistant -> ... -> student, simple to complex.

Stage 1 learns from the teacher; every later stage learns from the soft labels of the stage before it
(its training-row and validation-row probabilities go through the object store). The chain stops as soon
as a stage improves the validation score by less than ``min_improvement`` over the previous stage.
"""

from __future__ import annotations

from dataclasses import replace

from hpm_ray.distill.engine import ConfigTask, run_tasks
from hpm_ray.distill.evaluate import gain


def run_chain(payload_ref, stages: list[ConfigTask], X_train, X_val, metric: str, min_improvement: float,
              progress=None) -> tuple[list[dict], str]:
    """Run stages in order; returns their records and why the chain ended."""
    import ray

    records: list[dict] = []
    teacher_box = None
    for i, stage in enumerate(stages):
        task = replace(stage, key=f"chain:{i + 1}:{stage.student}", stage="chain", teacher_ref=teacher_box)
        rec = run_tasks(payload_ref, [task], progress, label=f"chain stage {i + 1}")[0]
        rec["chain_step"] = i + 1
        records.append(rec)
        if rec["status"] != "ok":
            return records, f"stage {i + 1} ({stage.student}) failed"
        if i > 0:
            g = gain(metric, rec["val_score"], records[i - 1]["val_score"])
            rec["chain_gain"] = g
            if g < min_improvement:
                return records, f"stage {i + 1} ({stage.student}) gained {g:.4f} < min_improvement {min_improvement}"
        model = rec["model"]
        teacher_box = [ray.put((model.predict_proba(X_train), model.predict_proba(X_val)))]
    return records, "all stages improved"
