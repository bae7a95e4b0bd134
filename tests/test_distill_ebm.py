"""The EBM student: soft targets through weighted copies kept together, the sklearn contract, the optional package."""

import numpy as np
import pytest
from sklearn.base import clone

from hpm_ray.distill.catalog import make_student
from hpm_ray.distill.ebm import EBMStudent, grouped_bags
from hpm_ray.distill.soft_targets import expand_rows, soft_targets
from hpm_ray.errors import SpecError


def test_grouped_bags_stratify_real_rows_and_differ_per_bag():
    labels = np.array([0] * 80 + [1] * 20)
    bags = grouped_bags(labels, 3, 0.15, seed=0)
    assert bags.shape == (100, 3) and set(np.unique(bags)) == {-1, 1}
    held = bags == -1
    assert held[:80].sum(axis=0).tolist() == [12, 12, 12] and held[80:].sum(axis=0).tolist() == [3, 3, 3]
    assert not np.array_equal(bags[:, 0], bags[:, 1])
    # expanded with the soft rows' copies, both copies of a real row fall on the same side
    rows, _, _ = expand_rows(np.full((100, 2), 0.5))
    assert np.array_equal(bags[rows][:100], bags[rows][100:])


@pytest.fixture(scope="module")
def credit_teacher():
    import lightgbm as lgb
    from sklearn.model_selection import cross_val_predict

    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    X, y = X.iloc[:2000].reset_index(drop=True), y.iloc[:2000].to_numpy()
    teacher = lgb.LGBMClassifier(n_estimators=100, num_leaves=31, verbose=-1, n_jobs=1)
    return X, y, cross_val_predict(teacher, X, y, cv=3, method="predict_proba")


def test_ebm_learns_the_soft_labels_and_is_an_sklearn_estimator(credit_teacher):
    """On rows it never saw, the soft EBM is closer to the teacher than its hard-label twin; clone refits alike."""
    X, y, teacher = credit_teacher
    fit, new = slice(0, 1500), slice(1500, None)
    params = {"interactions": 0, "learning_rate": 0.1, "min_samples_leaf": 10}
    q = soft_targets(teacher[fit], y[fit], 1.0, 1.0)
    soft = make_student("ebm", params).fit(X[fit], y[fit], soft_targets=q)
    hard = make_student("ebm", params).fit(X[fit], y[fit])
    gap_soft = np.mean(np.abs(soft.predict_proba(X[new])[:, 1] - teacher[new, 1]))
    gap_hard = np.mean(np.abs(hard.predict_proba(X[new])[:, 1] - teacher[new, 1]))
    assert gap_soft < gap_hard
    # leaves count real rows: every soft row is two copies at alpha = 1, so EBM's row minimum doubles
    assert soft.model_.min_samples_leaf == 20 and hard.model_.min_samples_leaf == 10

    twin = clone(soft)
    assert twin.get_params() == soft.get_params() and not hasattr(twin, "model_")
    again = twin.fit(X[fit], y[fit], soft_targets=q)
    assert np.allclose(again.predict_proba(X[new]), soft.predict_proba(X[new]))
    assert soft.size() > 0


def test_missing_optional_package_is_a_one_line_error(monkeypatch, capsys):
    from hpm_ray.cli import main
    from hpm_ray.config import validate_spec
    from hpm_ray.distill.spec import DistillSpec

    monkeypatch.setattr(EBMStudent, "requires", EBMStudent.requires._replace(module="hpm_ray_no_such_module"))
    assert main(["distill", "--students", "tree4,ebm", "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "--students: student 'ebm' needs the optional package interpret-core" in err and "hpm-ray[ebm]" in err
    with pytest.raises(SpecError, match="students: .*needs the optional package"):
        validate_spec(DistillSpec, {"students": ["ebm"]})
    with pytest.raises(SpecError, match="needs the optional package"):
        make_student("ebm")


def test_a_registered_ebm_pins_its_package():
    from importlib import metadata

    from hpm_ray.registry.models import pip_requirements

    pins = pip_requirements((EBMStudent.requires.distribution,))
    assert f"interpret-core=={metadata.version('interpret-core')}" in pins and any(
        p.startswith("numpy==") for p in pins
    )


def test_ebm_shape_tables_reproduce_the_model(tmp_path):
    """The exported JSON alone scores like the model: missing values, unseen categories, values on the cuts."""
    import json

    import pandas as pd

    from hpm_ray.distill.export import ebm_shapes, readable, score_ebm, write_artifacts

    rng = np.random.default_rng(0)
    n = 800
    X = pd.DataFrame(
        {"a": rng.normal(size=n).round(1), "c": rng.choice(["u", "v", "w"], n), "k": rng.integers(0, 4, n)}
    )
    y = ((X.a > 0.3) ^ (X.c == "w")).astype(int).to_numpy()
    X.loc[rng.choice(n, 40, replace=False), "a"] = np.nan
    X.loc[rng.choice(n, 30, replace=False), "c"] = None
    model = make_student("ebm", {"interactions": 2, "max_bins": 8}).fit(X, y)
    files = write_artifacts(model, tmp_path, "ebm")
    shapes = json.loads(files[0].read_text())
    assert shapes == ebm_shapes(model) and any(len(t["axes"]) == 2 for t in shapes["terms"])
    cuts = next(a["cuts"] for t in shapes["terms"] for a in t["axes"] if a["feature"] == "a")
    odd = X.iloc[: len(cuts) + 2].copy()
    odd["a"] = [*cuts, -1e9, 1e9]  # exactly on every cut, and far outside the training range
    odd.loc[odd.index[:3], "c"] = "never seen"
    for Z in (X, odd):
        assert np.allclose(score_ebm(shapes, Z), model.predict_proba(Z), atol=1e-9)
    table = readable(model)
    assert table.term.iloc[0] == "(intercept)" and {"a", "c", "k"} <= set(table.term)
    assert pd.read_csv(files[1]).shape == table.shape
    from hpm_ray.distill.report import preset_section
    from hpm_ray.report import Report

    rep = Report("ebm")
    preset_section(rep, "ebm", [{"seed": 0, "student_auc": 0.8, "twin_auc": 0.79}], model)
    page = rep.to_html()
    assert "EBM term importance" in page and "<svg" in page and "Shape tables" in page
