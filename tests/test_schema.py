"""FrameSchema (pure): a raw frame back to the training form, or an error that names the column."""

import numpy as np
import pandas as pd
import pytest

from hpm_ray.data.io import prepare_tabular
from hpm_ray.data.schema import FrameSchema, SchemaError


@pytest.fixture
def train():
    raw = pd.DataFrame(
        {
            "city": ["Oslo", "Lima", None, "Oslo"],
            "age": [30, 41, 52, 63],
            "income": [1.5, np.nan, 2.0, 3.0],
            "vip": [True, False, False, True],
            "y": [0, 1, 0, 1],
        }
    )
    return prepare_tabular(raw, "y").X


def test_schema_learns_kinds_gaps_and_categories(train):
    s = FrameSchema.from_frame(train)
    assert [(c.name, c.kind, c.optional) for c in s.columns] == [
        ("city", "category", True),
        ("age", "integer", False),
        ("income", "number", True),
        ("vip", "boolean", False),
    ]
    assert s.columns[0].categories == ("Lima", "Oslo")
    assert FrameSchema.from_dict(s.to_dict()) == s


def test_training_form_round_trips_unchanged(train):
    s = FrameSchema.from_frame(train)
    out, report = s.transform(train)
    pd.testing.assert_frame_equal(out, train)
    assert report.dropped == () and report.unseen == {}
    raw_out, _ = s.transform(s.raw(train))  # the raw input example reads back to the same frame
    pd.testing.assert_frame_equal(raw_out, train)


def test_raw_rows_reorder_map_unseen_and_accept_floats_in_integer_columns(train):
    s = FrameSchema.from_frame(train)
    raw = pd.DataFrame(
        {
            "extra": [1, 2, 3],
            "income": [None, 4.0, 5.0],
            "age": [33.0, np.nan, 20.0],
            "vip": ["true", False, 1],
            "city": ["Quito", "Oslo", None],
        }
    )
    out, report = s.transform(raw)
    assert list(out.columns) == ["city", "age", "income", "vip"]
    assert report.dropped == ("extra",) and report.unseen == {"city": 1}  # Quito: unseen; None: just missing
    assert out["city"].dtype == train["city"].dtype and out["city"].isna().tolist() == [True, False, True]
    assert out["age"].dtype == float and np.isnan(out.loc[1, "age"]) and out.loc[2, "age"] == 20.0
    assert out["vip"].tolist() == [True, False, True]
    whole, _ = s.transform(raw.assign(age=[33.0, 34.0, 20.0]))
    assert whole["age"].dtype == np.int64  # whole numbers with no gap come back in the training dtype


def test_numbers_for_numeric_looking_categories():
    s = FrameSchema.from_frame(pd.DataFrame({"zip": pd.Categorical(["7", "12"])}))
    out, report = s.transform(pd.DataFrame({"zip": [7, "12", 99, 12.0]}))
    assert out["zip"].tolist()[:2] == ["7", "12"] and out["zip"].tolist()[3] == "12" and report.unseen == {"zip": 1}


def test_versions_pickled_before_schemas_still_predict():
    """A pyfunc registered before schemas unpickles with ``feature_names`` only: numeric columns by name."""
    import pickle

    from sklearn.linear_model import LogisticRegression

    from hpm_ray.registry.pyfunc import ClassifierPyfunc

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1, 0, 1, 0]})
    m = LogisticRegression().fit(X, [0, 0, 1, 1])
    old = ClassifierPyfunc.__new__(ClassifierPyfunc)
    old.__dict__.update(estimator=m, feature_names=["a", "b"], classes=[0, 1])  # the old object's state
    restored = pickle.loads(pickle.dumps(old))
    assert restored.schema == FrameSchema.numeric(["a", "b"])
    out = restored.predict(None, X[["b", "a"]].assign(extra=1))
    np.testing.assert_allclose(out["proba_1"], m.predict_proba(X)[:, 1])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns="age"), "input lacks column(s) 'age'"),
        (lambda f: f.assign(age=["old", 1, 2, 3]), "column 'age' must hold numbers; got 'old'"),
        (lambda f: f.assign(age=[1.5, 1, 2, 3]), "column 'age' takes whole numbers; got 1.5"),
        (lambda f: f.assign(income=[True, False, True, True]), "column 'income' must hold numbers; got bool"),
        (lambda f: f.assign(vip=["maybe", True, True, True]), "column 'vip' takes true/false values"),
    ],
)
def test_mistyped_or_missing_columns_are_named(train, change, message):
    s = FrameSchema.from_frame(train)
    with pytest.raises(SchemaError) as err:
        s.transform(change(s.raw(train)))
    assert str(err.value) == message or str(err.value).startswith(message)


def test_optional_columns_may_be_left_out(train):
    s = FrameSchema.from_frame(train)
    out, _ = s.transform(s.raw(train).drop(columns=["income", "city"]))
    assert out["income"].isna().all() and out["city"].isna().all() and out["city"].dtype == train["city"].dtype
