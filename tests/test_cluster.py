"""Scale-out on a multi-node Ray cluster built on this machine (head + 2 worker nodes, 1 CPU each).

Each test starts ``tests/cluster_scripts/cluster_run.py`` in a subprocess (the pytest process already runs the
session's local Ray): it builds the cluster, runs the public CLI with ``--address <gcs>`` and no
``RAY_AUTH_MODE`` (hpm-ray must pick up the cluster's token itself), optionally removes a busy worker node,
and reports node ids and every task attempt from Ray's state API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parent / "cluster_scripts" / "cluster_run.py"
HPO_SPEC = "max_rounds: 100\nreport_every: 20\ngrace_period: 1\nmodel_prefix: cluster\n"
HPO_ARGS = ["hpo", "--horizons", "6", "--trials-per-horizon", "6", "--max-rows", "3000", "--seed", "0"]
DISTILL_SPEC = ("students: [logreg, tree, lgbm]\ntemperatures: [2.0]\nalphas: [0.3, 0.5, 0.7, 0.9]\n"
                "legacy_trials: 6\nteacher_trees: 40\nteacher_folds: 3\n")
DISTILL_ARGS = ["distill", "--method", "legacy", "--max-rows", "2000", "--no-mlflow"]
N_DISTILL_TASKS = 3 * 4 + 3  # students x alphas, plus one hard-label twin per student
# For the node-loss test every fit must last seconds, so the node dies with fits mid-flight (with sub-second
# fits the kill can land just after the running one finished, and then there is nothing to retry).
DISTILL_SLOW_SPEC = ("students: [lgbm]\ntemperatures: [2.0]\nalphas: [0.3, 0.5, 0.7, 0.9]\n"
                     "legacy_trials: 15\nteacher_trees: 40\nteacher_folds: 3\n")
N_DISTILL_SLOW_TASKS = 4 + 1


def run_cluster(tmp_path: Path, *commands: list[str], kill_on: str | None = None) -> dict:
    env = dict(os.environ)
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        env.pop(var, None)
    argv = [sys.executable, str(SCRIPT), *(["--kill-on", kill_on] if kill_on else [])]
    for cmd in commands:
        argv += ["--", *cmd]
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CLUSTER-REPORT ")]
    assert lines, f"cluster driver failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(lines[-1].split(" ", 1)[1])
    for run in report["runs"]:
        assert run["returncode"] == 0, run["stderr"][-2000:]
    return report


def spec_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def check_hpo(out: Path, n_trials: int) -> dict:
    """Trial count, no duplicates, and the quality bounds the single-node HPO test holds (test_hpo_ray.py)."""
    s = json.loads((out / "summary.json").read_text())
    e, d = s["horizons"]["6"], s["details"]["6"]
    assert e["n_trials"] == n_trials and d["n_failed"] == 0
    assert sum(d["trials_per_node"].values()) == n_trials
    assert 0.8 <= e["coverage_90"] <= 0.98 and 0.35 <= e["coverage_50"] <= 0.7 and e["crossing_rate"] == 0
    assert e["test_pinball"] < 1.05 * e["baselines"]["naive"]
    return d


def check_distill(out: Path, n_tasks: int = N_DISTILL_TASKS) -> pd.DataFrame:
    """Every config reported once and ok; the best student close to its teacher (single-node bounds)."""
    df = pd.read_csv(out / "results.csv")
    assert len(df) == n_tasks and df.key.is_unique and (df.status == "ok").all()
    s = json.loads((out / "summary.json").read_text())
    assert s["teacher"]["auc"] > 0.7 and s["best"]["auc"] > s["teacher"]["auc"] - 0.05
    return df


@pytest.mark.slow
def test_hpo_and_distillation_spread_over_nodes(tmp_path):
    hpo_out, dist_out = tmp_path / "hpo", tmp_path / "distill"
    rep = run_cluster(
        tmp_path,
        [*HPO_ARGS, "--spec", spec_file(tmp_path, "h.yaml", HPO_SPEC), "--out", str(hpo_out)],
        [*DISTILL_ARGS, "--spec", spec_file(tmp_path, "d.yaml", DISTILL_SPEC), "--out", str(dist_out)],
    )
    nodes = {rep["head"], *rep["workers"]}
    trial_nodes = check_hpo(hpo_out, 6)["trials_per_node"]
    assert len(trial_nodes) >= 2 and set(trial_nodes) <= nodes
    df = check_distill(dist_out)
    assert df.node_id.nunique() >= 2 and set(df.node_id) <= nodes
    fits = [t for t in rep["tasks"] if t["name"] == "run_config"]  # one attempt per config when no node dies
    assert len(fits) == N_DISTILL_TASKS and all(t["attempt"] == 0 for t in fits)


@pytest.mark.slow
@pytest.mark.chaos
def test_distillation_survives_a_lost_worker_node(tmp_path):
    out = tmp_path / "distill"
    rep = run_cluster(tmp_path, [*DISTILL_ARGS, "--spec", spec_file(tmp_path, "d.yaml", DISTILL_SLOW_SPEC), "--out", str(out)],
                      kill_on=r"legacy: 1/")
    dead = rep["killed"]
    assert dead and "run_config" in rep["running_on_killed"]
    df = check_distill(out, N_DISTILL_SLOW_TASKS)  # the requested configs, each exactly once, all ok
    fits = [t for t in rep["tasks"] if t["name"] == "run_config"]
    lost = [t for t in fits if t["node_id"] == dead and t["state"] != "FINISHED"]
    retried = [t for t in fits if t["attempt"] > 0]
    # The state API may never hear of the attempt that died with its node (its task events die with it), but
    # the retry is always there: at least one fit ran again, and at least as many as were seen lost.
    assert retried and len(retried) >= len(lost)
    assert all(t["node_id"] != dead and t["state"] == "FINISHED" for t in retried)
    assert Counter(t["task_id"] for t in fits if t["state"] == "FINISHED").most_common(1)[0][1] == 1
    assert df.node_id.nunique() >= 2


@pytest.mark.slow
@pytest.mark.chaos
def test_hpo_survives_a_lost_worker_node(tmp_path):
    out = tmp_path / "hpo"
    rep = run_cluster(tmp_path, [*HPO_ARGS, "--spec", spec_file(tmp_path, "h.yaml", HPO_SPEC), "--out", str(out)],
                      kill_on=r"^searching ")  # then the driver waits until a worker node runs a trial
    assert rep["killed"] and rep["running_on_killed"]
    check_hpo(out, 6)  # the requested trial count, none failed
    from mlflow.tracking import MlflowClient

    from hpm_ray.runtime import tracking_uri, tune_storage

    s = json.loads((out / "summary.json").read_text())
    # Tune recorded the interrupted trial's failure and restarted it (FailureConfig.max_failures)
    errors = [f.read_text() for f in Path(tune_storage(), f"{s['run_id']}-h6").glob("*/error.txt")]
    assert errors and all("unavailable" in e or "died" in e.lower() for e in errors)
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([client.get_run(s["mlflow_run_id"]).info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{s['mlflow_run_id']}' and tags.horizon = '6'")
    ids = [r.data.tags["trial_id"] for r in runs]
    assert len(ids) == 6 and len(set(ids)) == 6  # every trial logged once
    for r in runs:  # a restarted trial's history holds each report once
        hist = client.get_metric_history(r.info.run_id, "val_pinball")
        assert len({m.step for m in hist}) == len(hist)
