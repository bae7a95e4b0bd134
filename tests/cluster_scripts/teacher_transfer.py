"""How many bytes each node's object store takes in while distillation tasks read the shared payload.

Run by ``cluster_run.py`` against a multi-node cluster (``teacher_transfer.py --address <gcs>``). It puts one
distillation payload (features, labels, teacher probabilities) with ``put_payload`` and runs small ``logreg``
configs through ``run_tasks`` (the product path: every task gets the same ObjectRef). As a control it runs the
same configs again with a fresh copy of the payload per task (what shipping the data with every task costs).
For each phase it reads every raylet's cumulative bytes created in its object store (a pull from another node
creates the object locally) and prints one JSON line: payload size, and per node the tasks it ran and the bytes
its store created.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

N_TASKS = 16
# Fits of a fraction of a second: with instant ones, the first leased worker drains the queue before the worker
# nodes' processes start, and no remote node runs two tasks (the premise of the per-node check).
ROWS = 24_000


def created_bytes(nodes: list[dict]) -> dict[str, int]:
    from ray._private.internal_api import node_stats

    return {
        n["NodeID"]: node_stats(
            n["NodeManagerAddress"], n["NodeManagerPort"], include_memory_info=False
        ).store_stats.cumulative_created_bytes
        for n in nodes
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    args = ap.parse_args()

    import ray

    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.distill.engine import (
        TASK_OPTIONS,
        ConfigTask,
        put_payload,
        run_config,
        run_tasks,
    )
    from hpm_ray.runtime import init_ray

    init_ray(args.address)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    X, y = load_credit_default()
    X, y = X.iloc[:ROWS].astype(float), y.to_numpy()[:ROWS]
    n_train = ROWS - 500  # a small validation part keeps each task's returned predictions inline (not in the store)
    rng = np.random.default_rng(0)
    p = np.clip(0.2 + 0.6 * y + rng.normal(0, 0.1, ROWS), 0.01, 0.99)  # a teacher that knows the labels well
    teacher = np.column_stack([1 - p, p])
    tasks = [
        ConfigTask(
            key=f"logreg-{i}", student="logreg", temperature=2.0, alpha=0.1 + 0.8 * i / N_TASKS, fixed_params={"C": 1.0}
        )
        for i in range(N_TASKS)
    ]

    s0 = created_bytes(nodes)
    ref = put_payload(
        X.iloc[:n_train], y[:n_train], X.iloc[n_train:], y[n_train:], teacher[:n_train], teacher[n_train:]
    )
    s1 = created_bytes(nodes)
    shared = run_tasks(ref, tasks)
    s2 = created_bytes(nodes)
    # The control: a separate copy per task, as if the data travelled with every task.
    payload, remote = ray.get(ref), ray.remote(**TASK_OPTIONS)(run_config)
    per_task = ray.get([remote.remote([ray.put(payload)], task) for task in tasks])
    s3 = created_bytes(nodes)

    def phase(records, before, after) -> dict:
        ran = {n["NodeID"]: 0 for n in nodes}
        for r in records:
            assert r["status"] == "ok", r.get("error")
            ran[r["node_id"]] += 1
        d = delta(before, after)
        return {k: {"tasks": ran[k], "created_bytes": d[k]} for k in ran}

    put = delta(s0, s1)
    print(
        "TRANSFER-REPORT "
        + json.dumps(
            {
                "driver_node": ray.get_runtime_context().get_node_id(),
                "payload_bytes": max(put.values()),
                "shared": phase(shared, s1, s2),
                "per_task": phase(per_task, s2, s3),
            }
        )
    )


if __name__ == "__main__":
    main()
