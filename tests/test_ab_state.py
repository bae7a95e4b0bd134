"""The A/B state actor's body without Ray: labels read from the prediction log credit the version that answered,
the rule runs on a tick without traffic, a restart resumes exact sums, and every change is saved before MLflow."""

import math
import time

import numpy as np
import pytest

from hpm_ray.serving.predlog import Label, Prediction, PredictionLog, new_request_id
from hpm_ray.serving.state import ABState, initial_state

FAST = {"min_samples": 20, "min_duration_s": 0, "test": {"min_labels": 20}}


def proba(p1):
    return {"classes": ["0", "1"], "proba": [[1 - p1, p1]]}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """``make(policy, resume, shadow)`` builds an ABState on tmp sqlite files; MLflow calls are recorded instead."""
    logged = []

    def fake_log(self, entry, history, step):  # runs on the MLflow thread: the change must already be saved
        logged.append((entry["event"], step, self.store.load(self.app)["revision"]))

    monkeypatch.setattr(ABState, "_log_mlflow", fake_log)
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"

    def make(policy=FAST, resume=True, shadow=None):
        init = initial_state("m", "1", "2", shadow, 10.0)
        return ABState("app", str(tmp_path / "s.sqlite"), "unused://", policy, init, resume, None, url, timer_s=None)

    plog = PredictionLog(url)
    yield make, plog, logged
    plog.close()


def label(plog, answers, y=1, t=None):
    """One request answered by ``answers`` [(variant, version, p1)], logged and labelled ``y``."""
    t = time.time() if t is None else t
    rid = new_request_id(t)
    plog.append([Prediction(rid, "app", v, ver, proba(p), t) for v, ver, p in answers])
    assert plog.join([Label(rid, [y])])[0].outcome == "joined"


def test_labels_credit_the_version_not_the_slot_and_a_new_experiment_starts_clean(env):
    make, plog, logged = env
    a = make()
    label(plog, [("challenger", "2", 0.8)])
    label(plog, [("champion", "1", 0.4)])
    a.tick()
    assert a.state["scores"]["2"] == [1, pytest.approx(-math.log(0.8)), pytest.approx(math.log(0.8) ** 2)]
    assert a.state["scores"]["1"][:2] == [1, pytest.approx(-math.log(0.4))]
    assert a.state["labelled"] == {"2": 1, "1": 1}
    before = time.time()
    assert a.start("3")["ok"]
    label(plog, [("challenger", "2", 0.9)], t=before - 1)  # a late label for the old challenger's prediction
    label(plog, [("challenger", "3", 0.7)])
    a.tick()
    assert set(a.state["scores"]) == {"3"} and a.state["labelled"] == {"3": 1}  # never credited to v3
    a.flush()  # waits for the MLflow thread
    # every change was saved (revision bumped) before MLflow was called
    assert [(e, step) for e, step, _ in logged] == [("start", 1), ("start", 2)]
    assert all(step == saved for _, step, saved in logged)


def test_a_restart_resumes_exact_sums_from_the_saved_cursor(env):
    make, plog, _ = env
    rng = np.random.default_rng(0)
    ps = rng.uniform(0.05, 0.95, 60)
    a = make()
    for p in ps[:30]:
        label(plog, [("champion", "1", p)])
    a.tick()
    a.flush()
    for p in ps[30:45]:
        label(plog, [("champion", "1", p)])
    a.tick()  # read, maybe not saved yet (saves are throttled): a crash now loses nothing but a re-read
    for p in ps[45:]:
        label(plog, [("champion", "1", p)])
    b = make()  # what a restarted actor does: resume from the store
    assert b.restored and b.state["revision"] == a.state["revision"]
    b.tick()
    n, total, _ = b.state["scores"]["1"]
    assert n == 60 and total == pytest.approx(-np.log(ps).sum())


def test_the_rule_decides_on_the_tick_from_logged_labels(env):
    make, plog, _ = env
    a = make()
    for k in range(25):
        label(plog, [("champion", "1", 0.55)])
        label(plog, [("challenger", "2", 0.95)])
    assert a.tick().startswith("expand") and a.state["weights"] == {"champion": 75.0, "challenger": 25.0}
    assert a.state["history"][-1]["event"] == "expand"


def test_paired_design_when_the_shadow_is_the_challenger(env):
    make, plog, _ = env
    a = make(shadow="2")
    label(plog, [("champion", "1", 0.5), ("shadow", "2", 0.8)])
    label(plog, [("challenger", "2", 0.8), ("shadow", "2", 0.8)])  # v2 twice on one request: counted once
    a.tick()
    n, total, _ = a.state["diffs"]
    assert n == 1 and total == pytest.approx(math.log(0.5) - math.log(0.8))
    assert a.state["labelled"] == {"1": 1, "2": 2} and a.status()["paired"] == 1


def test_the_time_limit_ends_a_rollout_without_any_traffic(env):
    make, _, _ = env
    a = make(policy={**FAST, "test": {"min_labels": 20, "max_duration_s": 0.2}})
    assert a.tick().startswith("hold")
    time.sleep(0.3)
    assert a.tick().startswith("inconclusive")
    assert a.state["stage"] == "inconclusive" and a.state["weights"] == {"champion": 100.0}
    assert a.state["variants"]["challenger"] is None and a.state["history"][-1]["event"] == "inconclusive"


def test_sample_ratio_mismatch_holds_the_rollout(env):
    make, plog, _ = env
    a = make()
    for k in range(25):
        label(plog, [("champion", "1", 0.55)])
        label(plog, [("challenger", "2", 0.95)])
    a.record([("champion", True, 1.0, 0.9, True)] * 500 + [("challenger", True, 1.0, 0.9, True)] * 500)
    decision = a.tick()
    assert decision.startswith("hold") and "sample ratio mismatch" in decision
    assert a.state["weights"]["challenger"] == 10.0


def test_guardrails_judge_a_sliding_window_not_the_whole_history(env):
    make, _, _ = env
    a = make(policy={**FAST, "guard_window": 50, "max_p99_ms": 500})
    early = [("challenger", False, 5.0, None, True)] * 10  # an early burst of errors
    a.record(early + [("challenger", True, 5.0, 0.9, True)] * 100)
    assert not a.tick().startswith("rollback")  # cumulative 9 % errors, but 0 % in the last 50
    a.record([("challenger", False, 5.0, None, True)] * 5)  # 5 of the last 50: 10 % > 5 %
    assert a.tick().startswith("rollback: challenger error rate 10.0%")
    b = make(policy={**FAST, "guard_window": 50, "max_p99_ms": 500}, resume=False)
    b.record([("challenger", True, 900.0, 0.9, True)] * 30)
    assert "p99 latency 900 ms" in b.tick() and b.state["stage"] == "rolled_back"


def test_a_registry_failure_at_promotion_holds_gates_refusal_rolls_back(env, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from hpm_ray.registry import aliases

    make, _, _ = env
    a = make()
    a.state["weights"] = {"champion": 0.0, "challenger": 100.0}  # the last step: the rule promotes

    class Down:  # a registry whose reads fail: an outage, not an unknown model
        def get_registered_model(self, name):
            raise MlflowException("connection refused", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(aliases, "check_gates", lambda *a, **k: type("R", (), {"passed": True})())
    monkeypatch.setattr("mlflow.tracking.MlflowClient", lambda uri: Down())
    decision = a.tick()
    assert decision.startswith("hold: promotion failed: MlflowException: connection refused")
    assert a.state["stage"] == "rollout" and a.state["variants"]["challenger"] == "2"

    class Missing:
        def get_registered_model(self, name):
            raise MlflowException("not found", error_code=RESOURCE_DOES_NOT_EXIST)

    with pytest.raises(aliases.HPMError, match="unknown registered model"):
        aliases._registered(Missing(), "m")

    def refuse(name, version, gates, client, expected):
        raise aliases.GatesRefused("m v2 refused by quality gates: auc")

    monkeypatch.setattr(aliases, "promote", refuse)
    a.tick()
    assert a.state["stage"] == "rolled_back" and "refused by quality gates" in a.state["history"][-1]["detail"]


def test_status_shows_the_tests_estimate_and_interval_per_variant(env):
    """What the demo and ``hpm-ray ab status`` print: each version's mean log loss with its anytime-valid
    interval, and the test's challenger - champion estimate with the confidence sequence it decides on."""
    from hpm_ray.serving.cli import format_status
    from hpm_ray.serving.sequential import Moments, boundary, unpaired_interval

    make, plog, _ = env
    a = make()
    assert a.status()["test"] is None  # no labels yet
    rng = np.random.default_rng(3)
    p_cp, p_ch = rng.uniform(0.3, 0.7, 40), rng.uniform(0.6, 0.95, 40)
    for p in p_cp:
        label(plog, [("champion", "1", p)])
    for p in p_ch:
        label(plog, [("challenger", "2", p)])
    a.record([("champion", True, 1.0, None, True), ("challenger", True, 1.0, None, True)])  # the routers' counts
    a.tick()
    s = a.status()
    cp, ch = Moments.of(-np.log(p_cp)), Moments.of(-np.log(p_ch))
    t = a.policy.test
    iv = unpaired_interval(cp, ch, t.alpha, t.rho2)
    assert s["test"]["estimate"] == pytest.approx(ch.mean - cp.mean) and s["test"]["paired"] is False
    assert (s["test"]["lower"], s["test"]["upper"]) == (pytest.approx(iv.lower), pytest.approx(iv.upper))
    lo, hi = s["metrics"]["champion"]["score_interval"]
    half = math.sqrt(cp.variance) * boundary(cp.n, t.alpha, t.rho2)
    assert (lo, hi) == (pytest.approx(cp.mean - half), pytest.approx(cp.mean + half))
    text = format_status(s)
    assert f"challenger - champion {ch.mean - cp.mean:+.4f}" in text and f"[{lo:.4f}, {hi:.4f}]" in text


def test_revert_after_a_promotion_and_following_the_registry_alias(env, monkeypatch):
    """``ab revert`` moves the registry's champion back only if it is still the promoted version; the alias
    watcher's reads become the served champion, a read older than the actor's own change is ignored."""
    from hpm_ray.registry import aliases

    make, plog, _ = env
    a = make()
    registry = {"champion": "1"}

    def promote(name, version, gates, client, expected):
        registry["champion"] = version

    def rollback(name, client, expected):
        if registry["champion"] != expected:
            raise aliases.ConcurrentChange(f"champion is v{registry['champion']}, not v{expected}")
        registry["champion"] = "1"
        return "1"

    monkeypatch.setattr(aliases, "promote", promote)
    monkeypatch.setattr(aliases, "rollback", rollback)
    monkeypatch.setattr("mlflow.tracking.MlflowClient", lambda uri: None)
    assert a.revert()["status"] == 409  # a rollout, not a promotion: nothing to revert
    read_before_promote = time.time()
    assert a.promote("manual")["ok"] and a.snapshot()["previous_champion"] == "1"
    r = a.rollback()
    assert r["status"] == 409 and "ab revert" in r["error"]
    assert a.follow_champion("1", read_before_promote)["event"] is None  # stale: read before the promote wrote
    assert a.state["variants"]["champion"] == "2"
    registry["champion"] = "5"  # someone moved it meanwhile: the revert refuses, nothing changes
    assert a.revert()["status"] == 409 and a.state["variants"]["champion"] == "2"
    registry["champion"] = "2"
    assert a.revert()["ok"] and registry["champion"] == "1"
    assert a.state["variants"] == {"champion": "1", "challenger": None, "shadow": None}
    assert a.state["stage"] == "reverted" and a.state["history"][-1]["event"] == "revert"
    assert a.revert()["status"] == 409  # once

    b = make(resume=False)  # a registry promote of the challenger mid-rollout ends it as a promotion
    assert b.follow_champion("2", time.time())["event"] == "champion"
    assert b.state["variants"]["champion"] == "2" and b.state["variants"]["challenger"] is None
    assert b.state["stage"] == "promoted" and b.state["weights"] == {"champion": 100.0}
    c = make(resume=False)  # another version: the rollout goes on against it, evidence starts again
    label(plog, [("champion", "1", 0.4)])
    c.tick()
    assert c.state["labelled"] == {"1": 1}
    c.follow_champion("7", time.time())
    assert c.state["variants"] == {"champion": "7", "challenger": "2", "shadow": None}
    assert c.state["stage"] == "rollout" and c.state["labelled"] == {} and c.snapshot()["previous_champion"] == "1"


def test_status_without_the_admin_token_shows_weights_and_counts_only(env):
    from hpm_ray.serving.state import PUBLIC_METRICS, public_status

    make, _, _ = env
    a = make()
    # every variant is listed before its routers' first (batched) records arrive
    assert {n: m["requests"] for n, m in public_status(a.status())["metrics"].items()} == {
        "champion": 0,
        "challenger": 0,
    }
    a.record([("champion", True, 1.0, 0.8, True), ("challenger", False, 3.0, None, True)])
    a.mlflow_error = "MlflowException: connection refused at http://10.0.0.3:5000"
    full = a.status()
    public = public_status(full)
    assert set(public) == {"model", "variants", "weights", "stage", "revision", "metrics"}
    assert public["metrics"]["challenger"] == {"version": "2", "requests": 1, "errors": 1, "labelled": 0}
    assert all(set(m) == set(PUBLIC_METRICS) for m in public["metrics"].values())
    text = str(public)
    assert "refused" not in text and "mlflow" not in text.lower() and "gates" not in text
