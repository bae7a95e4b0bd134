"""`hpm-ray data describe` and the CLI's bad-input contract: exit 2, one line naming the problem."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpm_ray.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_describe_bundled_credit(capsys):
    code, out, _ = _run(capsys, "data", "describe", "--data", "credit")
    assert code == 0
    assert "rows: 30,000" in out and "default_payment_next_month" in out and "6,636 (22.1%)" in out


def test_describe_bundled_btc_with_horizons(capsys):
    code, out, _ = _run(capsys, "data", "describe", "--data", "btc", "--horizons", "42,60")
    assert code == 0
    assert "2018-05-15 06:00:00+00:00 .. 2022-08-19 23:00:00+00:00" in out and "sorted" in out
    assert "horizon 42:" in out and "horizon 60:" in out


def test_describe_user_csv_json(tmp_path, capsys):
    p = tmp_path / "mine.csv"
    pd.DataFrame({"a": [1, None, 3], "grade": ["x", "y", "x"], "label": [0, 1, 1]}).to_csv(p, index=False)
    code, out, _ = _run(capsys, "data", "describe", "--data", str(p), "--target", "label", "--json")
    import json

    d = json.loads(out)
    assert code == 0 and d["rows"] == 3 and d["missing"]["a"] == 1 and d["target"]["classes"] == {"1": 2, "0": 1}


def _series(n=400):
    close = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, n)))
    ts = pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M:%SZ")
    return pd.DataFrame({"timestamp": ts, "close": close})


BAD_CASES = {
    "missing file": (None, ["--data", "{dir}/nope.csv"], "data file not found"),
    "empty file": ("", ["--data", "{path}"], "data file is empty"),
    "missing target": (_series(), ["--data", "{path}", "--target", "default"], "missing target column 'default'"),
    "missing time column": (
        _series().rename(columns={"timestamp": "t"}),
        ["--data", "{path}", "--time-col", "timestamp"],
        "missing time column 'timestamp'",
    ),
    "non-numeric price": (
        _series().assign(close="abc"),
        ["--data", "{path}", "--horizons", "5"],
        "price column 'close' has 400 non-numeric",
    ),
    "duplicate timestamps": (
        pd.concat([_series().iloc[:5], _series().iloc[4:]]),
        ["--data", "{path}", "--horizons", "5"],
        "duplicate timestamp",
    ),
    "unsorted timestamps": (_series().iloc[::-1], ["--data", "{path}", "--horizons", "5"], "not sorted ascending"),
    "too few rows for horizon": (_series(1500), ["--data", "{path}", "--horizons", "5,600"], "too few for horizon 600"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, case):
    content, argv, expected = BAD_CASES[case]
    path = tmp_path / "in.csv"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        content.to_csv(path, index=False)
    argv = [a.format(dir=tmp_path, path=path) for a in argv]
    code, _, err = _run(capsys, "data", "describe", *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hpm-ray: error:") and expected in err, err
    assert "Traceback" not in err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "describe", "--no-such-flag"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--no-such-flag" in err


def test_console_script_is_installed_and_lists_subcommands():
    exe = Path(sys.executable).with_name("hpm-ray")
    assert exe.exists(), "the hpm-ray console script is not installed next to this Python"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("data", "demo"):
        assert cmd in out
