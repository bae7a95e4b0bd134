"""The pass criterion bench/conformal.py prints (issue 16, Done-when 3), against hand-worked cases."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_conformal", Path(__file__).parents[1] / "bench" / "conformal.py")
bench = sys.modules["bench_conformal"] = importlib.util.module_from_spec(spec)  # dataclasses look the module up
spec.loader.exec_module(bench)


def row(name, cov, width):
    return bench.Row(name, cov, width, [None] * 3, None)


@pytest.mark.parametrize(
    "ours, peers, ok, where",
    [
        # 0.005 from target vs the closest peer's 0.01; the only peer covering >= 0.895 (0.91) is wider: pass
        (row("pid", 0.895, 0.15), [row("aci", 0.91, 0.16), row("enbpi", 0.88, 0.14)], True, None),
        # the peer at 0.902 is closer to 0.9 than 0.895: fails the first part
        (row("pid", 0.895, 0.15), [row("aci", 0.902, 0.16)], False, "0.0050 vs MAPIE's closest (aci) 0.0020: FAIL"),
        # as close (0.005 each side) but the peer covering more is narrower: fails the second part
        (row("pid", 0.895, 0.15), [row("aci", 0.905, 0.149)], False, "(aci 0.1490) at 0.1500: FAIL"),
    ],
)
def test_criterion_by_hand(ours, peers, ok, where):
    passed, text = bench.criterion(ours, peers)
    assert passed is ok
    assert where is None or where in text


def test_row_lookup_serves_our_median_by_row_number():
    import numpy as np

    m = bench.RowLookup(np.array([0.1, 0.2, 0.3]))
    assert m.predict(np.array([[2], [0]])).tolist() == [0.3, 0.1] and m.fitted_
    assert m.set_params(median=None).fitted_ is False  # MAPIE clones through get/set_params
