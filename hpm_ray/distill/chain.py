"""Progressive distillation chain: teacher -> assistant -> ... -> student, simple to complex.

Stage 1 learns from the teacher; every later stage learns from the soft labels of the stage before it. The
chain stops as soon as a stage improves the validation score by less than ``min_improvement`` over the
previous stage. The stages depend on each other, so they run back to back in ONE Ray task: a stage's
training-row probabilities go straight to the next stage instead of through the driver and the object store.
"""

from __future__ import annotations

from dataclasses import replace

from hpm_ray.distill.engine import (
    ConfigTask,
    TaskQueue,
    failed_record,
    fit_config,
    ray_task,
    resolve_students,
    shared_payload,
)
from hpm_ray.distill.evaluate import gain


def chain_stages(stages: list[ConfigTask]) -> list[ConfigTask]:
    """The stage tasks with their chain keys, in order."""
    return [replace(st, key=f"chain:{i + 1}:{st.student}", stage="chain") for i, st in enumerate(stages)]


def run_stages(payload_box: list, stages: list[ConfigTask], metric: str, min_improvement: float) -> list[dict]:
    """Body of the chain's Ray task: fit the stages in order; stop at a failure or a gain below ``min_improvement``."""
    payload, zero_copy = shared_payload(payload_box)
    teacher = payload["teacher_train"]
    records: list[dict] = []
    for i, stage in enumerate(stages):
        try:
            rec = fit_config(payload, stage, teacher)
        except Exception as exc:  # noqa: BLE001 - the failed stage ends the chain, its record says why
            rec = failed_record(stage, exc)
        rec |= {"chain_step": i + 1, "payload_zero_copy": zero_copy}
        records.append(rec)
        if rec["status"] != "ok":
            break
        if i > 0:
            rec["chain_gain"] = gain(metric, rec["val_score"], records[i - 1]["val_score"])
            if rec["chain_gain"] < min_improvement:
                break
        teacher = rec["model"].predict_proba(payload["X_train"])
    return records


def chain_note(records: list[dict], min_improvement: float) -> str:
    """Why the chain ended, from its records."""
    last = records[-1]
    where = f"stage {last['chain_step']} ({last['task'].student})"
    if last["status"] != "ok":
        return f"{where} failed"
    if last.get("chain_gain", min_improvement) < min_improvement:
        return f"{where} gained {last['chain_gain']:.4f} < min_improvement {min_improvement}"
    return "all stages improved"


def submit_chain(queue: TaskQueue, stages: list[ConfigTask], metric: str, min_improvement: float) -> list[ConfigTask]:
    """Start the chain as one Ray task on ``queue``; collect it with ``queue.results`` on the returned tasks."""
    tasks = resolve_students(chain_stages(stages))
    queue.track(ray_task(run_stages).remote([queue.payload_ref], tasks, metric, min_improvement), tasks)
    return tasks
