"""Scale-out on a multi-node Ray cluster built on this machine (head + 2 worker nodes, 1 CPU each).

Each cluster lives in a ``tests/cluster_scripts/cluster_run.py`` subprocess (the pytest process already runs the
session's local Ray): it builds the cluster, runs the public CLI with ``--address <gcs>`` and no ``RAY_AUTH_MODE``
(hpm-ray must pick up the cluster's token itself), and can remove a worker node the moment it runs a given kind
of work. Evidence of placement and retries comes from what the runs record themselves (node id and attempt number
of every distillation config, node id of every Tune report, per-node object-store counters), not from Ray's state
API, which forgets the task events of a dead node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPTS = Path(__file__).parent / "cluster_scripts"
HPO_SPEC = "max_rounds: 100\nreport_every: 20\ngrace_period: 1\nmodel_prefix: cluster\n"
HPO_ARGS = ["hpo", "--horizons", "6", "--max-rows", "3000", "--seed", "0"]
DISTILL_SPEC = (
    "students: [logreg, tree, lgbm]\ntemperatures: [2.0]\nalphas: [0.5, 0.9]\n"
    "legacy_trials: 6\nteacher_trees: 40\nteacher_folds: 3\nteacher_tune_trials: 0\n"
)
DISTILL_ARGS = ["distill", "--method", "legacy", "--max-rows", "2000", "--no-mlflow"]
N_DISTILL_TASKS = 3 * 2 * 2  # students x alphas, each with its hard-label twin study (fair twins: as many studies)
# The node-loss test kills a node as soon as it starts a fit: a fit of a few seconds is long enough.
DISTILL_CHAOS_SPEC = (
    "students: [lgbm]\ntemperatures: [2.0]\nalphas: [0.5, 0.9]\nlegacy_trials: 6\nteacher_trees: 40\nteacher_folds: 3\n"
    "teacher_tune_trials: 0\n"
)
N_DISTILL_CHAOS_TASKS = 2 * 2  # two configs, each with its twin study
N_CHAOS_TRIALS = 4
# No pruning in the HPO node-loss test (grace period = every report): a trial ASHA stops just as its node dies
# would end cleanly, and the test would not see a trial interrupted and restarted elsewhere.
HPO_CHAOS_SPEC = "max_rounds: 200\nreport_every: 40\ngrace_period: 5\nmodel_prefix: cluster\n"


def run_cluster(tmp_path: Path, *commands: list[str], kill: list[str] = ()) -> dict:
    """Run ``commands`` on a fresh 3-node cluster; ``kill``: cluster_run.py's node-loss options."""
    env = dict(os.environ)
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        env.pop(var, None)
    argv = [sys.executable, str(SCRIPTS / "cluster_run.py"), *kill]
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
    assert e["test_pinball"] < 1.05 * e["baselines"]["naive"]["test_pinball"]
    return d


def check_distill(out: Path, n_tasks: int = N_DISTILL_TASKS) -> pd.DataFrame:
    """Every config reported once and ok; the best student close to its teacher (single-node bounds)."""
    df = pd.read_csv(out / "results.csv")
    assert len(df) == n_tasks and df.key.is_unique and (df.status == "ok").all()
    s = json.loads((out / "summary.json").read_text())
    assert s["teacher"]["auc"] > 0.7 and s["best"]["auc"] > s["teacher"]["auc"] - 0.05
    return df


@pytest.fixture(scope="module")
def spread_run(tmp_path_factory) -> tuple[dict, Path]:
    """One cluster, no node lost: a small HPO, a small distillation and the teacher-transfer probe."""
    tmp = tmp_path_factory.mktemp("spread")
    rep = run_cluster(
        tmp,
        [
            *HPO_ARGS,
            "--trials-per-horizon",
            "6",
            "--spec",
            spec_file(tmp, "h.yaml", HPO_SPEC),
            "--out",
            str(tmp / "hpo"),
        ],
        [*DISTILL_ARGS, "--spec", spec_file(tmp, "d.yaml", DISTILL_SPEC), "--out", str(tmp / "distill")],
        [str(SCRIPTS / "teacher_transfer.py")],
    )
    return rep, tmp


@pytest.mark.slow
def test_hpo_and_distillation_spread_over_nodes(spread_run):
    rep, tmp = spread_run
    nodes = {rep["head"], *rep["workers"]}
    trial_nodes = check_hpo(tmp / "hpo", 6)["trials_per_node"]
    assert len(trial_nodes) >= 2 and set(trial_nodes) <= nodes
    df = check_distill(tmp / "distill")
    assert df.node_id.nunique() >= 2 and set(df.node_id) <= nodes
    assert (df.attempt == 0).all()  # no node died: every config ran once


@pytest.mark.slow
def test_teacher_payload_is_fetched_once_per_node(spread_run):
    """Tasks sharing the payload's ObjectRef make each node pull it once, however many of them run there."""
    rep, _ = spread_run
    line = next(ln for ln in rep["runs"][2]["stdout"].splitlines() if ln.startswith("TRANSFER-REPORT "))
    t = json.loads(line.split(" ", 1)[1])
    size, driver = t["payload_bytes"], t["driver_node"]
    assert size > 500_000  # features + labels + teacher probabilities: held in the object store, not inlined
    remote = {n: v for n, v in t["shared"].items() if n != driver and v["tasks"]}
    assert remote and max(v["tasks"] for v in remote.values()) >= 2
    for v in remote.values():  # one copy per node (plus a few bytes of small objects), not one per task
        assert size <= v["created_bytes"] < 1.1 * size
    # the control (a copy per task) shows what the counter sees when the payload travels with every task
    for n, v in t["per_task"].items():
        if n != driver:
            assert v["created_bytes"] >= v["tasks"] * size


@pytest.mark.slow
def test_distillation_survives_a_lost_worker_node(tmp_path):
    out = tmp_path / "distill"
    # the first worker node seen running a config fit dies with it (the fit has seconds of work left)
    rep = run_cluster(
        tmp_path,
        [*DISTILL_ARGS, "--spec", spec_file(tmp_path, "d.yaml", DISTILL_CHAOS_SPEC), "--out", str(out)],
        kill=["--kill-on-start", "--busy", r"^ray::run_config\b"],
    )
    dead = rep["killed"]
    assert dead and rep["running_on_killed"] == ["run_config"]
    df = check_distill(out, N_DISTILL_CHAOS_TASKS)  # the requested configs, each reported exactly once, all ok
    # the fit that died with its node was re-run elsewhere: its record says so (attempt counts Ray's retries)
    retried = df[df.attempt > 0]
    assert len(retried) and dead not in set(retried.node_id)
    assert df.node_id.nunique() >= 2


@pytest.mark.slow
def test_hpo_survives_a_lost_worker_node(tmp_path):
    out = tmp_path / "hpo"
    # once the search starts, the first worker node seen training a trial dies with it
    rep = run_cluster(
        tmp_path,
        [
            *HPO_ARGS,
            "--trials-per-horizon",
            str(N_CHAOS_TRIALS),
            "--spec",
            spec_file(tmp_path, "h.yaml", HPO_CHAOS_SPEC),
            "--out",
            str(out),
        ],
        kill=["--kill-on", r"^searching ", "--busy", r"^ray::ImplicitFunc\.train\b"],
    )
    dead = rep["killed"]
    assert dead and rep["running_on_killed"] == ["ImplicitFunc.train"]
    check_hpo(out, N_CHAOS_TRIALS)  # the requested trial count, none failed (a trial may have finished on `dead`)
    from mlflow.tracking import MlflowClient

    from hpm_ray.runtime import tracking_uri, tune_storage

    s = json.loads((out / "summary.json").read_text())
    # Tune recorded the interrupted trial's failure and restarted it elsewhere (FailureConfig.max_failures)
    failed_dirs = [f.parent for f in Path(tune_storage(), f"{s['run_id']}-h6").glob("*/error.txt")]
    assert failed_dirs, (
        f"no trial was interrupted: {rep['killed_at_s']} s into the run, stderr {rep['runs'][0]['stderr'][-1500:]}"
    )
    for d in failed_dirs:
        assert "unavailable" in (d / "error.txt").read_text() or "died" in (d / "error.txt").read_text().lower()
        reports = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines()]
        assert reports[-1]["node_id"] != dead
    client = MlflowClient(tracking_uri())
    runs = client.search_runs(
        [client.get_run(s["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{s['mlflow_run_id']}' and tags.horizon = '6'",
    )
    ids = [r.data.tags["trial_id"] for r in runs]
    assert len(ids) == N_CHAOS_TRIALS and len(set(ids)) == N_CHAOS_TRIALS  # every trial logged once
    for r in runs:  # a restarted trial's history holds each report once
        hist = client.get_metric_history(r.info.run_id, "val_pinball")
        assert len({m.step for m in hist}) == len(hist)
