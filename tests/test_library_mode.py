"""Library mode: hpm-ray used from Python leaves its caller's warning filters and environment alone.

Only the ``hpm-ray`` entry point (``hpm_ray.cli``) changes its own process; everything else passes settings
explicitly (Ray's ``runtime_env``, MLflow's in-process URIs).
"""

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import hpm_ray
from hpm_ray import cli

PACKAGE = Path(hpm_ray.__file__).parent
_ENV_WRITERS = {"setdefault", "pop", "update", "clear", "popitem", "__setitem__", "__delitem__"}
_PROCESS_CALLS = {
    ("os", "putenv"),
    ("os", "unsetenv"),
    ("warnings", "filterwarnings"),
    ("warnings", "simplefilter"),
    ("warnings", "resetwarnings"),
    ("mlflow", "set_tracking_uri"),
    ("mlflow", "set_registry_uri"),
    ("logging", "basicConfig"),
    ("logging", "disable"),
}


def _is_environ(node) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def process_changes(source: str) -> list[tuple[int, str]]:
    """(line, what) for every environment write and process-wide warnings/logging/MLflow call in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            found += [
                (node.lineno, "os.environ[...]")
                for t in targets
                if isinstance(t, ast.Subscript) and _is_environ(t.value)
            ]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, attr = node.func.value, node.func.attr
            if _is_environ(owner) and attr in _ENV_WRITERS:
                found.append((node.lineno, f"os.environ.{attr}"))
            elif isinstance(owner, ast.Name) and (owner.id, attr) in _PROCESS_CALLS:
                found.append((node.lineno, f"{owner.id}.{attr}"))
    return sorted(found)


def test_the_scan_finds_each_kind_of_process_change():
    source = (
        "import os, warnings, mlflow\nos.environ['A'] = '1'\nos.environ.setdefault('B', '2')\n"
        "del os.environ['A']\nwarnings.filterwarnings('ignore')\nmlflow.set_tracking_uri('x')\n"
        "x = os.environ.get('A')\nwarnings.warn('fine')\n"
    )
    assert [what for _, what in process_changes(source)] == [
        "os.environ[...]",
        "os.environ.setdefault",
        "os.environ[...]",
        "warnings.filterwarnings",
        "mlflow.set_tracking_uri",
    ]


def test_only_the_cli_changes_the_process():
    """Done-when 3, statically: no module but ``cli.py`` writes the environment or sets process-wide filters.

    ``_compat.set_mlflow_uris`` may, in its fallback only, which puts the environment back as it was.
    """
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "cli.py":
            continue
        changes = process_changes(path.read_text())
        if rel == "_compat.py":
            fallback = next(
                n
                for n in ast.parse(path.read_text()).body
                if isinstance(n, ast.FunctionDef) and n.name == "set_mlflow_uris"
            )
            changes = [c for c in changes if not fallback.lineno <= c[0] <= fallback.end_lineno]
        if changes:
            offenders[rel] = changes
    assert offenders == {}


def test_cli_quiet_is_where_the_process_is_quieted(monkeypatch):
    for key in (*cli._QUIET_ENV, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        monkeypatch.delenv(key, raising=False)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        cli.quiet(verbose=True)
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ and warnings.filters == before
        cli.quiet()
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and os.environ["PYTHONWARNINGS"] == "ignore"
        assert warnings.filters[0][0] == "ignore"


_DISTILL_IN_A_NOTEBOOK = """
import json, os, warnings
import lightgbm, mlflow, ray, xgboost
import numpy as np, pandas as pd
from hpm_ray.distill.auto import AutoDistiller

ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)  # the caller's own Ray (its writes are its own)
rng = np.random.default_rng(0)
X = pd.DataFrame(rng.normal(size=(800, 5)), columns=[f"x{i}" for i in range(5)])
y = pd.Series((X.x0 + X.x1 * X.x2 + rng.normal(scale=0.5, size=800) > 0).astype(int))
env, filters = dict(os.environ), list(warnings.filters)
df = AutoDistiller(X, y, method="legacy", students=["tree"], temperatures=[2.0], alphas=[0.5], legacy_trials=1,
                   teacher_trees=20, teacher_folds=2, teacher_tune_trials=0, progress=False).run()
after = dict(os.environ)
print(json.dumps({"ok": int((df.status == "ok").sum()), "filters_unchanged": list(warnings.filters) == filters,
                  "env_changes": sorted(k for k in env.keys() | after.keys() if env.get(k) != after.get(k))}))
"""


@pytest.mark.slow
def test_autodistiller_run_leaves_the_callers_warnings_and_environment_alone(sub_env, tmp_path):
    """Done-when 3: a notebook-like process imports ray/mlflow/lightgbm/xgboost, joins Ray itself, runs
    ``AutoDistiller(...).run()`` and finds ``warnings.filters`` and ``os.environ`` as they were."""
    # Without what an in-process CLI test may have left in this process's environment (the CLI's own writes).
    env = {k: v for k, v in sub_env.items() if k not in (*cli._QUIET_ENV, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    env["HPM_RAY_RUNS_DIR"] = str(tmp_path / "runs")  # a teacher cache of its own: the teachers are trained
    # The session's Ray listens on loopback only (init_ray); Ray's own rule for joining such an instance by a
    # 127.0.0.1 address, as on macOS (otherwise it rewrites the address to the machine's own, which is refused).
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", _DISTILL_IN_A_NOTEBOOK], env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"ok": 2, "filters_unchanged": True, "env_changes": []}  # the config and its hard-label twin
