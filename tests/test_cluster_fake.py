"""Ray's fake multi-node provider brings up cluster.yaml-like node types locally, and a small run uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

HERE = Path(__file__).parent
CONFIG = HERE / "fake_cluster.yaml"
SCRIPT = HERE / "cluster_scripts" / "fake_run.py"
SPEC = "students: [logreg, tree]\ntemperatures: [2.0]\nalphas: [0.5, 0.9]\nlegacy_trials: 3\nteacher_trees: 40\nteacher_folds: 3\nteacher_tune_trials: 0\n"


def test_fake_config_mirrors_cluster_yaml_and_passes_ray_validation():
    from ray.autoscaler._private.util import validate_config

    fake = yaml.safe_load(CONFIG.read_text())
    real = yaml.safe_load((HERE.parent / "cluster.yaml").read_text())
    # (prepare_config would merge the fake provider's defaults file, which the 2.60 wheel lacks: the file is
    # written complete instead)
    validate_config(fake)
    assert set(fake["available_node_types"]) - {fake["head_node_type"]} == set(real["available_node_types"]) - {
        real["head_node_type"]
    }  # the same worker type(s)


@pytest.mark.slow
def test_fake_provider_launches_workers_and_a_run_uses_them(tmp_path):
    (tmp_path / "d.yaml").write_text(SPEC)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the `ray` CLI of this venv
    out = tmp_path / "distill"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(CONFIG),
            "--",
            "distill",
            "--method",
            "legacy",
            "--max-rows",
            "2000",
            "--no-mlflow",
            "--spec",
            str(tmp_path / "d.yaml"),
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAKE-REPORT ")]
    assert line, proc.stderr[-2000:]
    rep = json.loads(line[-1].split(" ", 1)[1])
    assert rep["returncode"] == 0, rep["stderr"][-2000:]
    assert len(rep["workers"]) == 2 and rep["head"] not in rep["workers"]  # the autoscaler launched cpu_worker x2
    df = pd.read_csv(out / "results.csv")
    assert (df.status == "ok").all() and len(df) == 2 * 2 * 2  # students x alphas, each with a twin study
    assert set(df.node_id) <= set(rep["workers"]) and df.node_id.nunique() == 2  # the 0-CPU head ran no fit
    still_up = subprocess.run(["pgrep", "-f", rep["gcs"]], capture_output=True, text=True).stdout.split()
    assert not still_up  # every process of the fake cluster is gone
