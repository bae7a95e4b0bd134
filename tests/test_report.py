"""Reports are one self-contained file: inline SVG, no external resources, escaped text."""

import re

import numpy as np

from hpm_ray.report import Report


def test_report_is_self_contained_and_escaped(tmp_path):
    r = Report("Coverage <by> horizon")
    r.table(
        [{"horizon": "42", "coverage_90": 0.91}, {"horizon": "48", "coverage_90": 0.84}],
        flags={"coverage_90": lambda v: 0.87 <= v <= 0.93},
    )
    x = np.arange(50)
    r.line_chart({"pinball": (x, np.linspace(1, 0.5, 50))}, "pinball by trial", markers=True, hlines={"naive": 0.9})
    r.bar_chart(["42", "48"], {"cov": [0.91, 0.84]}, "coverage", hlines={"target": 0.9})
    r.fan_chart(x, [(x - 2.0, x + 2.0, "90%")], x * 1.0, x + 0.5, "fan")
    html = r.save(tmp_path / "r.html").read_text()
    assert html.count("<svg") == 3
    assert "Coverage &lt;by&gt; horizon" in html
    assert not re.search(r'(src|href)=["\']?https?:', html) and "<script" not in html
    assert html.count('class="ok"') == 1 and html.count('class="bad"') == 1


def test_hpo_rolling_coverage_section_draws_the_band_or_says_why_not():
    import pandas as pd

    from hpm_ray.hpo.report import rolling_section

    n = 100
    y = np.zeros(n)
    lo, hi = -np.ones(n), np.ones(n)
    fig = {
        "y": y,
        "time": pd.date_range("2022-01-01", periods=n, freq="h"),
        "window": 24,
        "method": "pid(step=0.01)",
        "shipped": {"90": (lo, hi)},
        "cqr": {"90": (lo + 2, hi + 2)},
    }
    r = Report("t")
    rolling_section(r, fig, 48, 1)
    html = r.to_html()
    assert html.count("<svg") == 1 and "rolling 1-day coverage on test (h=48)" in html
    assert "90% pid(step=0.01)" in html and "90% split CQR" in html and "nominal 0.9" in html and "band 0.87" in html
    r = Report("t")
    rolling_section(r, {**fig, "window": 200}, 48, 30)
    assert "<svg" not in r.to_html() and "shorter than 30 days" in r.to_html()


def test_hpo_family_section_says_what_ships_and_where_there_is_no_skill():
    from hpm_ray.hpo.report import family_section, skill_rows, skill_statement

    def base(stat, p, setting=None):
        by_q = {"0.05": 0.002, "0.5": 0.01, "0.95": 0.003}
        return dict(val_pinball=0.0119, test_pinball=0.005, test_pinball_by_quantile=by_q, setting=setting) | {
            "dm_stat": stat,
            "dm_pvalue": p,
        }

    entry = {
        "registered_family": "naive",
        "family_reason": "naive has the lowest validation pinball (0.0119 vs lgbm 0.012)",
        "val_pinball": 0.012,
        "tuned_test_pinball": 0.0051,
        "tuned_test_pinball_by_quantile": {"0.05": 0.0021, "0.5": 0.0101, "0.95": 0.0031},
        "baselines": {
            "naive": base(0.4, 0.69),
            "ewma": base(-0.2, 0.84, 0.97),
            "har": base(2.9, 0.004),
            "default_lgbm": base(-2.6, 0.009) | {"val_pinball": None},
        },
    }
    assert skill_statement(48, entry) == (
        "h=48: no evidence of skill over naive, ewma; skill over default_lgbm; the tuned forecaster loses to har "
        "(two-sided Diebold-Mariano test, 5 % level)."
    )
    rows = skill_rows(48, entry, "lgbm")
    assert [r["forecaster"] for r in rows] == ["tuned LGBM", "naive", "ewma (decay 0.97)", "har", "default_lgbm"]
    assert [r["ships"] for r in rows] == [False, True, False, False, False]
    assert rows[0]["q0.05"] == 0.0021 and rows[0]["DM"] == "" and rows[3]["p"] == 0.004
    assert len(rows[0]) == 10  # h, forecaster, val, test, 3 quantiles, DM, p, ships: fits the page
    r = Report("t")
    family_section(r, {"horizons": {"48": entry}}, "lgbm")
    html = r.to_html()
    assert "h=48: ships naive; naive has the lowest validation pinball" in html
    assert "no evidence of skill over naive, ewma" in html and html.count("<tr>") == 6
