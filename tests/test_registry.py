"""Registry on the sandbox MLflow: gated promote (nothing written when refused), rollback, aliases, CLI."""

import lightgbm as lgb
import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import make_classification

from hpm_ray.cli import main
from hpm_ray.errors import HPMError
from hpm_ray.registry.aliases import (
    HISTORY_TAG,
    ConcurrentChange,
    list_versions,
    promote,
    resolve_version,
    rollback,
    set_alias,
)
from hpm_ray.registry.gates import classifier_metrics
from hpm_ray.registry.models import log_and_register
from hpm_ray.registry.pyfunc import ClassifierPyfunc

NAME = "reg-test-clf"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versions(mlflow_uri):
    """v1 good, v2 trained on flipped labels (fails the gates), v3 good: metrics measured on a holdout."""
    from hpm_ray.runtime import mlflow_experiment

    X, y = make_classification(n_samples=1200, n_features=6, n_informative=4, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    exp = mlflow_experiment("registry-tests")
    out = []
    for flip in (False, True, False):
        m = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(X[:800], 1 - y[:800] if flip else y[:800])
        metrics = classifier_metrics(y[800:], m.predict_proba(X[800:]), m.classes_)
        with mlflow.start_run(experiment_id=exp):
            mv = log_and_register(ClassifierPyfunc(m, X), NAME, "classifier", metrics, input_example=X[:3])
        out.append(str(mv.version))
    return out


def aliases():
    return {k: str(v) for k, v in MlflowClient().get_registered_model(NAME).aliases.items()}


def test_promote_gates_rollback_cycle(versions):
    good, bad, good2 = versions
    assert promote(NAME, good) == ""
    assert aliases() == {"champion": good}
    tags_before = dict(MlflowClient().get_registered_model(NAME).tags)
    with pytest.raises(HPMError, match=rf"v{bad} refused by quality gates: accuracy=0\.\d+ \(needs >= 0\.65\)"):
        promote(NAME, bad)
    assert resolve_version(NAME, "champion") == good  # nothing written on refusal
    assert dict(MlflowClient().get_registered_model(NAME).tags) == tags_before
    assert promote(NAME, good2) == good
    assert resolve_version(NAME, "champion") == good2
    assert rollback(NAME) == good
    assert resolve_version(NAME, "champion") == good
    with pytest.raises(HPMError, match="no previous champion"):
        rollback(NAME)
    # an override per kind lets a team relax a bound deliberately
    assert (
        promote(
            NAME,
            bad,
            {"classifier": {m: {"low": 0.0} for m in ("accuracy", "f1", "precision_*", "recall_*", "mean_confidence")}},
        )
        == good
    )
    assert rollback(NAME) == good
    assert MlflowClient().get_registered_model(NAME).tags[HISTORY_TAG] == f'["{good}"]'


class Racing:
    """An MLflow client on which ``other`` writes the alias right after ours (a concurrent promote), or whose
    history-tag write fails once."""

    def __init__(self, other=None, fail_tag=False):
        self.real, self.other, self.fail_tag = MlflowClient(), other, fail_tag

    def __getattr__(self, name):
        return getattr(self.real, name)

    def set_registered_model_alias(self, name, alias, version):
        self.real.set_registered_model_alias(name, alias, version)
        if self.other:
            self.real.set_registered_model_alias(name, alias, self.other)

    def set_registered_model_tag(self, name, key, value):
        if self.fail_tag:
            raise OSError("tag write failed")
        self.real.set_registered_model_tag(name, key, value)


def test_champion_moves_alias_first_with_a_guard_against_concurrent_changes(versions):
    good, bad, good2 = versions
    promote(NAME, good)
    tags = dict(MlflowClient().get_registered_model(NAME).tags)
    with pytest.raises(ConcurrentChange, match=rf"champion is v{good}, not v{good2}"):
        promote(NAME, good2, expected=good2)
    with pytest.raises(ConcurrentChange):
        rollback(NAME, expected=bad)
    assert aliases()["champion"] == good and dict(MlflowClient().get_registered_model(NAME).tags) == tags
    # another writer moves the alias between our write and its read-back: refused before the history tag
    with pytest.raises(ConcurrentChange, match=rf"reads v{good} after writing v{good2}"):
        promote(NAME, good2, client=Racing(other=good))
    assert dict(MlflowClient().get_registered_model(NAME).tags) == tags
    # the alias is written first: a failed history write leaves it moved, and rollback still walks back right
    with pytest.raises(OSError):
        promote(NAME, good2, client=Racing(fail_tag=True), expected=good)
    assert aliases()["champion"] == good2
    assert rollback(NAME, expected=good2) == good and aliases()["champion"] == good
    assert main(["registry", "rollback", NAME, "--expect", good2]) == 2  # the CLI guard: one-line refusal


def test_aliases_and_listing(versions):
    good, bad, _ = versions
    set_alias(NAME, "challenger", bad)
    assert resolve_version(NAME, "challenger") == bad
    with pytest.raises(HPMError, match="'champion' only moves through"):
        set_alias(NAME, "champion", bad)
    with pytest.raises(HPMError, match="has no version '99'"):
        set_alias(NAME, "challenger", "99")
    with pytest.raises(HPMError, match="unknown registered model 'nope'"):
        resolve_version("nope", "champion")
    with pytest.raises(HPMError, match="has no alias 'staging'"):
        resolve_version(NAME, "staging")
    rows = {r.version: r for r in list_versions(NAME)}
    assert rows[bad].gates.startswith("accuracy=") and "challenger" in rows[bad].aliases
    assert rows[good].gates == "pass" and rows[good].kind == "classifier"
    set_alias(NAME, "challenger", None)
    assert "challenger" not in aliases()


def test_cli(versions, capsys):
    _, bad, good2 = versions
    assert main(["registry", "list", NAME]) == 0
    out = capsys.readouterr().out
    assert f"{NAME} v{bad} [classifier]" in out and "gates=pass" in out
    assert main(["registry", "promote", NAME, bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpm-ray: error:") and "refused by quality gates" in err and err.count("\n") == 1
    assert main(["registry", "promote", "missing-model", "1"]) == 2
    assert "unknown registered model 'missing-model'" in capsys.readouterr().err
    assert main(["registry", "alias", NAME, "shadow", good2]) == 0
    assert resolve_version(NAME, "shadow") == good2
    assert main(["registry", "alias", NAME, "shadow", "--delete"]) == 0
    assert main(["registry", "alias", NAME, "shadow"]) == 2  # neither a version nor --delete
    capsys.readouterr()
    assert main(["registry", "alias", NAME, "v3", good2]) == 2  # MLflow reserves v<N> alias names
    err = capsys.readouterr().err
    assert err.startswith("hpm-ray: error:") and "reserved" in err and err.count("\n") == 1


def test_loaded_pyfunc_serves_on_one_thread_with_the_same_answers(versions):
    """Loading sets n_jobs=1 (trained with the default); the serving call skips only MLflow's checks, same answers."""
    from hpm_ray.serving.models import input_spec, validated_predict
    from hpm_ray.serving.schemas import parse_payload

    model = mlflow.pyfunc.load_model(f"models:/{NAME}/{versions[0]}")
    estimator = model.unwrap_python_model().estimator
    assert estimator.get_params()["n_jobs"] == 1
    X, _ = make_classification(n_samples=50, n_features=6, n_informative=4, random_state=1)
    spec = input_spec(model.metadata, model)
    body = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]).to_json(orient="split", index=False)
    frame = parse_payload(('{"dataframe_split": ' + body + "}").encode(), spec).frame
    fast = validated_predict(model)(frame)
    pd.testing.assert_frame_equal(fast, model.predict(frame))
    assert list(fast.columns) == ["prediction", "proba_0", "proba_1"] and len(fast) == 50
