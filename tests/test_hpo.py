"""``hpm-ray hpo`` bad input: one line, exit code 2, before any Ray work starts."""

from __future__ import annotations

import pytest

from hpm_ray.cli import main


@pytest.fixture
def small_csv(btc_small, tmp_path):
    p = tmp_path / "btc.csv"
    btc_small.frame.reset_index().to_csv(p, index=False)
    return p


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--quantiles", "0.05,0.5,1.2"], "strictly between 0 and 1"),
        (["--quantiles", "0.1,0.5,0.8"], "no symmetric partner 0.9"),
        (["--horizons", "6,x"], "--horizons: expected comma-separated int"),
        (["--horizons", "300"], "horizon 300 bars is longer than the calibration block"),
        (["--trials-per-horizon", "0"], "trials_per_horizon"),
        (["--learner", "catboost"], "learner: unknown learner 'catboost'; known: lightgbm"),
        (["--quantiles", "0.001,0.5,0.999"], "too few for the 0.001 quantile pair (needs 499)"),
        (["--horizons", "60"], "too few to choose an interval method for horizon 60 (needs 360)"),
    ],
)
def test_bad_input_is_one_line_exit_2(small_csv, tmp_path, capsys, flags, message):
    code = main(["hpo", "--data", str(small_csv), "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize(
    "spec_text, message",
    [
        ("step_sizes: [0.01, 1.5]\n", "step_sizes: step sizes must lie strictly between 0 and 1"),
        ("step_sizes: []\n", "step sizes must lie strictly between 0 and 1"),
        ("interval_method: magic\n", "interval_method"),
        ("interval_vol: vix\n", "interval_vol: no feature named 'vix'"),
        ("interval_vol: ret_1\n", "interval_vol 'ret_1' must be positive and finite at every row"),
    ],
)
def test_bad_interval_settings_are_one_line_exit_2(small_csv, tmp_path, capsys, spec_text, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text)
    code = main(["hpo", "--data", str(small_csv), "--horizons", "6", "--spec", str(spec), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_series_too_short_for_the_folds(btc_small, tmp_path, capsys):
    p = tmp_path / "short.csv"
    btc_small.frame.iloc[:400].reset_index().to_csv(p, index=False)
    assert main(["hpo", "--data", str(p), "--horizons", "12", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "too few" in err or "too small" in err, err


@pytest.mark.parametrize("content", ["{not json", '{"spec": {}}', "[1, 2]"])
def test_resume_of_a_damaged_run_file_is_an_error(small_csv, tmp_path, capsys, content):
    (tmp_path / "run.json").write_text(content)
    assert main(["hpo", "--data", str(small_csv), "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is damaged" in err and len(err.splitlines()) == 1


def test_resume_refuses_a_setting_that_differs_from_the_saved_run(small_csv, tmp_path, capsys):
    import json

    from hpm_ray.hpo.spec import HPOSpec

    saved = HPOSpec(data=str(small_csv), horizons=[6]).model_dump(mode="json", exclude={"runtime"})
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "hpo-x", "mlflow_run_id": None, "spec": saved}))
    assert main(["hpo", "--data", str(small_csv), "--horizons", "12", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume continues run hpo-x as it was saved: horizons [12] differs from its [6]" in err
    assert len(err.splitlines()) == 1


def test_out_that_is_a_file_and_bad_runtime_settings_are_errors(small_csv, tmp_path, capsys):
    assert main(["hpo", "--data", str(small_csv), "--out", str(small_csv)]) == 2
    assert "is a file" in capsys.readouterr().err
    # a flag overriding one runtime setting keeps the spec file's runtime section, typos included
    spec = tmp_path / "s.yaml"
    spec.write_text("runtime: {cpus: 2}\n")
    assert main(["hpo", "--data", str(small_csv), "--spec", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "runtime.cpus" in capsys.readouterr().err
    spec.write_text("runtime: {num_cpus: -3}\n")
    assert main(["hpo", "--data", str(small_csv), "--spec", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "runtime.num_cpus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["hpo", "--data", str(small_csv), "--num-cpus", "0"])
    assert exited.value.code == 2 and "--num-cpus: must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--port", "99999"])
    assert exited.value.code == 2 and "a port is at most 65535" in capsys.readouterr().err


def test_an_error_raised_inside_a_ray_task_is_reported_by_its_cause():
    from ray.exceptions import RayTaskError

    from hpm_ray.cli import _root_cause
    from hpm_ray.errors import DataError, last_line

    wrapped = RayTaskError("fit", "Traceback (most recent call last):\n  ...\n", DataError("bad column"))
    assert isinstance(_root_cause(wrapped), DataError) and str(_root_cause(wrapped)) == "bad column"
    assert last_line(ValueError("line one\n  detail\nthe reason\n")) == "the reason"


def test_resume_without_a_run_is_an_error(small_csv, tmp_path, capsys):
    assert main(["hpo", "--data", str(small_csv), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no interrupted run" in capsys.readouterr().err


def test_shipped_spec_is_the_defaults():
    from pathlib import Path

    from hpm_ray.config import load_spec
    from hpm_ray.hpo.spec import HPOSpec

    assert load_spec(HPOSpec, Path(__file__).parents[1] / "tune" / "hpo.yaml") == HPOSpec()


def test_target_scale_by_hand():
    import numpy as np

    from hpm_ray.hpo.trainable import target_scale

    # value x sqrt(4); NaN and non-positive volatility fall back to the fill value
    np.testing.assert_allclose(target_scale(np.array([0.01, np.nan, -1.0]), 4, 0.02), [0.02, 0.04, 0.04])


def test_summary_table_shows_a_dash_for_levels_the_quantiles_lack():
    from hpm_ray.hpo.cli import summary_table

    entry = {
        "registered_family": "naive",
        "n_trials": 3,
        "n_pruned": 1,
        "test_pinball": 0.0123456,
        "baselines": {"naive": {"test_pinball": 0.0125}},
        "interval_method": "pid",
        "coverage_90": None,
        "coverage_90_by_vol_tercile": None,
        "coverage_90_cqr": None,
        "coverage_90_aci": None,
        "coverage_50": None,
        "crossing_rate": 0.0,
    }
    header, row = summary_table({"horizons": {"6": entry}}).splitlines()  # quantiles 0.1/0.5/0.9: only an 80 % pair
    assert row.split() == ["6", "naive", "3", "1", "0.012346", "0.012500", "pid"] + ["-"] * 7 + ["0.000"]
    assert len(row) == len(header)
    entry.update(coverage_90=0.9, coverage_90_by_vol_tercile=[0.88, 0.9, 0.91], coverage_90_cqr=0.87)
    _, row = summary_table({"horizons": {"6": entry}}).splitlines()
    assert row.split()[7:12] == ["0.900", "0.880", "0.900", "0.910", "0.870"] and len(row) == len(header)
