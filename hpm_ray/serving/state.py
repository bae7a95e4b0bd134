"""A/B state (variants, weights, stage, history, live metrics) in one small Ray actor, persisted in sqlite.

Routers read the state every ~0.2 s and send their per-request records in batches, so weights change
live without restarting a replica, and metrics from every router replica meet in one place. Labels do not
pass through the actor: routers join them to the durable prediction log (:mod:`hpm_ray.serving.predlog`),
and the actor reads the labelled scores from there on a timer (every ``TICK_S``), crediting each to the
version that answered; its cursor into the log is saved with the state, so the test's sums are exact
across restarts. The rollout rule runs on the same timer, so a time limit fires without traffic.

Each state change is written to sqlite first (restored when the actor or the app restarts), then logged
to MLflow (run ``ab-<app>``) in a background thread: a slow or failing tracking server never delays a
rollback. The sqlite file must be reachable from the node the actor runs on (a single node, or a shared
path). The actor restarts by itself when it dies (``max_restarts=-1``) and resumes from its store.

An app served by the ``champion`` alias follows it: a thread reads the alias every ``ALIAS_POLL_S`` and a
change made in the registry (``registry promote``/``rollback``, another tool) becomes the served champion.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from hpm_ray.serving.policy import RolloutPolicy, ScoreStats, VariantStats, decide
from hpm_ray.serving.predlog import LabelledRequest, PredictionLog
from hpm_ray.serving.sequential import Moments, boundary, paired_interval, unpaired_interval

NAMESPACE = "hpm_ray"
EXPERIMENT = "hpm-ray-ab"
SLOTS = ("champion", "challenger", "shadow")
_LATENCY_WINDOW = 5000
TICK_S = 1.0  # the actor reads new labels and applies the rollout rule this often, traffic or not
_PRUNE_S = 600.0  # retention of the prediction log is applied this often
_HISTORY = 200
ALIAS_POLL_S = 0.5  # an app served by alias reads the registry's 'champion' this often (one small query)
PUBLIC_METRICS = ("version", "requests", "errors", "labelled")  # what /ab/status shows without the admin token
log = logging.getLogger(__name__)


def actor_name(app: str) -> str:
    return f"hpm-ab-state-{app}"


def initial_state(model: str, champion: str, challenger: str | None, shadow: str | None, traffic: float) -> dict:
    """A fresh experiment: the champion alone, or the challenger at ``traffic`` percent under automatic rollout."""
    weights = {"champion": 100.0 - traffic, "challenger": float(traffic)} if challenger else {"champion": 100.0}
    return {
        "model": model,
        "variants": {"champion": champion, "challenger": challenger, "shadow": shadow},
        "weights": weights,
        "stage": "rollout" if challenger else "idle",
        "step_started": time.time(),
        "revision": 0,
        "history": [],
        "stats": {},
        **_fresh_experiment(time.time()),
        "cursor": 0,  # the last prediction-log label (seq) read into the scores
    }


def public_status(status: dict) -> dict:
    """What anyone may see: weights and counts. No error texts, decisions, gates, scores, run ids or history."""
    out = {k: status[k] for k in ("model", "variants", "weights", "stage", "revision")}
    out["metrics"] = {name: {k: m.get(k) for k in PUBLIC_METRICS} for name, m in status.get("metrics", {}).items()}
    return out


def _fresh_experiment(now: float) -> dict:
    """Per-experiment evidence: score moments [n, sum, sum of squares] per version, labelled requests per
    version, paired differences (challenger - champion on the same rows), routed requests at this step."""
    return {"experiment_started": now, "scores": {}, "labelled": {}, "diffs": [0, 0.0, 0.0], "step_counts": {}}


class SqliteStore:
    """One row of JSON state per app, plus an append-only event table."""

    def __init__(self, path: str):
        self.path = path
        with self._conn() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS ab_state (app TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL)"
            )
            c.execute("CREATE TABLE IF NOT EXISTS ab_events (app TEXT, time REAL, event TEXT, detail TEXT)")

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def load(self, app: str) -> dict | None:
        with self._conn() as c:
            row = c.execute("SELECT state FROM ab_state WHERE app = ?", (app,)).fetchone()
        return json.loads(row[0]) if row else None

    def save(self, app: str, state: dict, event: tuple[str, str] | None = None) -> None:
        with self._conn() as c:
            c.execute("INSERT OR REPLACE INTO ab_state VALUES (?, ?, ?)", (app, json.dumps(state), time.time()))
            if event:
                c.execute("INSERT INTO ab_events VALUES (?, ?, ?, ?)", (app, time.time(), *event))


def _moments(m: list) -> Moments:
    return Moments(int(m[0]), float(m[1]), float(m[2]))


def _add(m: list, scores) -> None:
    x = np.asarray(scores, dtype=float)
    m[0] += int(x.size)
    m[1] += float(x.sum())
    m[2] += float(np.dot(x, x))


class ABState:
    """The actor's body. Public methods are called by routers and admin endpoints; none raises to a router:
    a refused admin call returns ``{"ok": False, "error": ...}``.

    ``resume`` restores the saved state of a fresh deploy; a restarted actor (Ray re-runs ``__init__`` after a
    crash) always resumes, whatever the deploy said. ``timer_s`` (None in unit tests) starts the rule's timer.
    """

    def __init__(
        self,
        app: str,
        db_path: str,
        tracking_uri: str,
        policy: dict,
        init: dict,
        resume: bool = True,
        gates: dict | None = None,
        log_url: str | None = None,
        log_retention: tuple[float | None, int | None] = (None, None),
        timer_s: float | None = TICK_S,
        follow_alias: bool = False,
    ):
        self.app = app
        self.gates = gates
        self.store = SqliteStore(db_path)
        self.tracking_uri = tracking_uri
        self.policy = RolloutPolicy.model_validate(policy)
        self.log = PredictionLog(log_url, *log_retention) if log_url else None
        restarted = _was_restarted()
        stored = self.store.load(app) if resume or restarted else None
        self.restored = bool(stored and stored.get("model") == init["model"])
        self.state = stored if self.restored else copy.deepcopy(init)
        for key, value in {**_fresh_experiment(time.time()), "cursor": 0}.items():
            self.state.setdefault(key, value)  # a state saved before the prediction log: its experiment starts now
        self.latency: dict[str, deque] = {}
        self.recent_ok: dict[str, deque] = {}  # the guardrails' sliding window of outcomes per variant
        for name, s in self.state.get("stats", {}).items():
            self.latency[name] = deque(s.pop("latency_recent", []), maxlen=_LATENCY_WINDOW)
            self.recent_ok[name] = deque(s.pop("ok_recent", []), maxlen=self.policy.guard_window)
        self.last_decision = ("restarted" if restarted else "restored") + " from sqlite" if self.restored else "started"
        self.mlflow_error = ""
        self._mlflow = ThreadPoolExecutor(1, thread_name_prefix="ab-mlflow")  # in order, off the actor's thread
        self._run_id = self.state.get("mlflow_run_id")
        self._last_save = 0.0
        self._last_prune = 0.0
        self._dirty = False
        self._champion_set_at = 0.0  # when this actor last moved the champion itself (the alias watcher's guard)
        self.follow_alias = follow_alias
        if not self.restored:
            self._change(
                "start",
                f"champion v{init['variants']['champion']}"
                + (f", challenger v{init['variants']['challenger']}" if init["variants"]["challenger"] else ""),
            )
        if timer_s:
            threading.Thread(target=_timer, args=(timer_s,), daemon=True, name="ab-timer").start()
        if timer_s and follow_alias:
            args = (ALIAS_POLL_S, self.state["model"], tracking_uri)
            threading.Thread(target=_watch_alias, args=args, daemon=True, name="ab-alias").start()

    # -- reads -------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """What routers need: variants, weights, revision, and the previous champion (they keep it loaded)."""
        out = {k: self.state[k] for k in ("model", "variants", "weights", "revision", "stage")}
        out["previous_champion"] = self.state.get("previous_champion")
        return out

    def status(self) -> dict:
        hidden = ("stats", "history", "scores", "labelled", "diffs", "step_counts")
        out = {k: v for k, v in self.state.items() if k not in hidden}
        out["mlflow_run_id"] = self._run_id
        out["history"] = self.state["history"][-20:]
        # every variant in the A/B is listed, with zero counts until its routers' first records arrive
        live = [name for name, version in self.state["variants"].items() if version is not None]
        out["metrics"] = {name: self._metrics(name) for name in dict.fromkeys([*live, *self.state["stats"]])}
        out["paired"] = _moments(self.state["diffs"]).n if self._paired() else None
        out["test"] = self._test_interval()
        out["policy"] = self.policy.model_dump()
        out["last_decision"] = self.last_decision
        out["restored"] = self.restored
        out["mlflow_error"] = self.mlflow_error
        out["gates"] = self.gates  # the app's gate overrides: the drift watcher gates its retrained models with them
        return out

    def _metrics(self, name: str) -> dict:
        s = self.state["stats"].get(name) or self._fresh_stats(name)
        lat = np.asarray(self.latency.get(name, ()), dtype=float)
        version = str(s.get("version"))
        m = _moments(self.state["scores"].get(version, [0, 0.0, 0.0]))
        return {
            "version": s.get("version"),
            "requests": s["requests"],
            "errors": s["errors"],
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "mean_confidence": s["conf_sum"] / s["conf_n"] if s["conf_n"] else None,
            "labelled": self.state["labelled"].get(version, 0),  # labelled requests answered by this version
            "labelled_rows": m.n,
            "score": self.policy.test.score,
            "mean_score": m.mean if m.n else None,  # lower is better
            # anytime-valid CS of this version's mean score (the test's boundary for one mean)
            "score_interval": self._mean_interval(m),
        }

    def _mean_interval(self, m: Moments) -> list[float] | None:
        if m.n < 2:
            return None
        t = self.policy.test
        radius = math.sqrt(m.variance) * float(boundary(m.n, t.alpha, t.rho2))
        return [m.mean - radius, m.mean + radius]

    def _fresh_stats(self, name: str) -> dict:
        return {"version": self.state["variants"].get(name), "requests": 0, "errors": 0, "conf_sum": 0.0, "conf_n": 0}

    def _stats(self, name: str) -> dict:
        return self.state["stats"].setdefault(name, self._fresh_stats(name))

    # -- traffic -----------------------------------------------------------------------------------------
    def record(self, records: list[tuple]) -> None:
        """``(variant, ok, latency_ms, confidence | None, routed)`` per answer; ``routed``: the variant the
        weights chose (not a fallback or a shadow), counted for the sample-ratio check."""
        steps = self.state["step_counts"]
        for variant, ok, latency_ms, confidence, routed in records:
            s = self._stats(variant)
            s["requests"] += 1
            s["errors"] += 0 if ok else 1
            self.latency.setdefault(variant, deque(maxlen=_LATENCY_WINDOW)).append(latency_ms)
            self.recent_ok.setdefault(variant, deque(maxlen=self.policy.guard_window)).append(bool(ok))
            if confidence is not None:
                s["conf_sum"] += confidence
                s["conf_n"] += 1
            if routed:
                steps[variant] = steps.get(variant, 0) + 1
        self._dirty = True

    def tick(self) -> str:
        """Read new labels from the prediction log, apply the rollout rule, save; returns the last decision.
        Called by the actor's own timer, and by tests that want it now."""
        try:
            if self.log is not None:
                self._read_labels()
                now = time.time()
                if now - self._last_prune >= _PRUNE_S:
                    self._last_prune = now
                    self.log.prune(now)
            self._decide()
        except Exception as exc:  # a database hiccup or a failed promote must not stop the timer
            self.last_decision = f"hold: rule not applied ({type(exc).__name__}: {exc})"
            log.warning("A/B rule not applied: %s", self.last_decision)
        if self._dirty:
            self._save(force=False)
        return self.last_decision

    def _read_labels(self) -> None:
        while True:
            batch = self.log.scores_since(self.app, int(self.state["cursor"]))
            if not batch:
                return
            for req in batch:
                self._credit(req)
            self.state["cursor"] = batch[-1].seq
            self._dirty = True

    def _credit(self, req: LabelledRequest) -> None:
        """Each version that answered ``req`` during this experiment gets its per-row scores (once per
        request, even when a version answered as challenger and as shadow), and the paired difference when
        both champion and challenger versions answered it."""
        started = self.state["experiment_started"]
        per_version = {}
        for s in req.scored:
            if s.time >= started and s.version not in per_version:
                per_version[s.version] = s.scores
        for version, scores in per_version.items():
            _add(self.state["scores"].setdefault(version, [0, 0.0, 0.0]), scores)
            self.state["labelled"][version] = self.state["labelled"].get(version, 0) + 1
        cp, ch = (str(self.state["variants"].get(k)) for k in ("champion", "challenger"))
        if cp in per_version and ch in per_version and len(per_version[cp]) == len(per_version[ch]):
            _add(self.state["diffs"], np.subtract(per_version[ch], per_version[cp]))

    def _guard_stats(self, slot: str) -> VariantStats:
        """The guardrails' view of a variant: its last ``guard_window`` requests, and its labelled requests."""
        window = self.recent_ok.get(slot, ())
        lat = list(self.latency.get(slot, ()))[-self.policy.guard_window :]
        return VariantStats(
            requests=len(window),
            errors=sum(not ok for ok in window),
            labelled=self.state["labelled"].get(str(self.state["variants"].get(slot)), 0),
            p99_ms=float(np.percentile(lat, 99)) if lat else None,
        )

    def _paired(self) -> bool:
        """Paired design: the shadow is the challenger's version, so it scores the champion's rows too."""
        v = self.state["variants"]
        return bool(v.get("challenger")) and v.get("shadow") == v.get("challenger")

    # -- admin -------------------------------------------------------------------------------------------
    def set_weights(self, weights: dict) -> dict:
        live = {k for k in ("champion", "challenger") if self.state["variants"].get(k)}
        unknown = set(weights) - live
        if unknown:
            return {"ok": False, "status": 422, "error": f"no variant {sorted(unknown)} (serving: {sorted(live)})"}
        try:
            values = {k: float(v) for k, v in weights.items()}
        except (TypeError, ValueError):
            return {"ok": False, "status": 422, "error": "weights must be numbers"}
        if any(not np.isfinite(v) or v < 0 for v in values.values()) or sum(values.values()) <= 0:
            return {"ok": False, "status": 422, "error": "weights must be finite, >= 0, with a positive sum"}
        self.state["weights"] = {k: values.get(k, 0.0) for k in sorted(live, key=SLOTS.index)}
        self.state["stage"] = "manual"  # a hand-set split pauses the automatic rollout
        return self._change("weights", json.dumps(self.state["weights"]))

    def start(self, challenger: str, traffic: float | None = None) -> dict:
        traffic = float(self.policy.steps[0] if traffic is None else traffic)
        if not 0 < traffic < 100:
            return {"ok": False, "status": 422, "error": f"traffic must be in (0, 100), got {traffic:g}"}
        if str(challenger) == str(self.state["variants"]["champion"]):
            return {"ok": False, "status": 409, "error": f"v{challenger} is already the champion"}
        self.state["variants"]["challenger"] = str(challenger)
        self.state["weights"] = {"champion": 100.0 - traffic, "challenger": traffic}
        self.state["stage"] = "rollout"
        self.state["stats"] = {}
        self.state.update(_fresh_experiment(time.time()))  # late labels of earlier predictions are not counted
        self.latency.clear()
        self.recent_ok.clear()
        return self._change("start", f"challenger v{challenger} at {traffic:g}%")

    def expand(self, reason: str = "manual") -> dict:
        if not self.state["variants"].get("challenger"):
            return {"ok": False, "status": 409, "error": "no challenger to expand"}
        traffic = self.policy.next_step(self.state["weights"].get("challenger", 0.0))
        self.state["weights"] = {"champion": 100.0 - traffic, "challenger": traffic}
        return self._change("expand", f"challenger -> {traffic:g}% ({reason})")

    def rollback(self, reason: str = "manual", stage: str = "rolled_back") -> dict:
        challenger = self.state["variants"].get("challenger")
        if not challenger:
            hint = "; 'ab revert' goes back to the previous champion" if self.state["stage"] == "promoted" else ""
            return {"ok": False, "status": 409, "error": "no challenger to roll back" + hint}
        self.state["variants"]["challenger"] = None
        self.state["weights"] = {"champion": 100.0}
        self.state["stage"] = stage
        event = "rollback" if stage == "rolled_back" else stage
        return self._change(event, f"challenger v{challenger} removed: {reason}")

    def promote(self, reason: str = "manual") -> dict:
        """Promote the challenger through the registry's quality gates; refused gates leave serving unchanged."""
        from mlflow.tracking import MlflowClient

        from hpm_ray.registry.aliases import GatesRefused, promote

        challenger = self.state["variants"].get("challenger")
        if not challenger:
            return {"ok": False, "status": 409, "error": "no challenger to promote"}
        champion = self.state["variants"]["champion"]
        try:
            # served by alias: promote only over the champion this app serves (else it holds; the watcher follows)
            expected = champion if self.follow_alias else None
            promote(
                self.state["model"], challenger, self.gates, client=MlflowClient(self.tracking_uri), expected=expected
            )
        except GatesRefused as exc:
            return {"ok": False, "status": 409, "error": str(exc), "refused": True}
        except Exception as exc:  # the registry failing (or an alias it cannot find): nothing changed, say why
            return {"ok": False, "status": 503, "error": f"promotion failed: {type(exc).__name__}: {exc}"}
        self._set_champion(challenger, champion)
        self.state["stage"] = "promoted"
        return self._change("promote", f"v{challenger} is champion ({reason})")

    def _set_champion(self, version: str, previous: str) -> None:
        self.state["variants"].update(champion=version, challenger=None)
        self.state["weights"] = {"champion": 100.0}
        self.state["previous_champion"] = previous
        self._champion_set_at = time.time()

    def revert(self, reason: str = "manual") -> dict:
        """After a promotion: the registry's ``champion`` goes back to the previous one (if nobody moved it
        meanwhile), and the app serves it."""
        from mlflow.tracking import MlflowClient

        from hpm_ray.errors import HPMError
        from hpm_ray.registry.aliases import rollback

        if self.state["stage"] != "promoted":
            return {
                "ok": False,
                "status": 409,
                "error": f"nothing to revert: no promotion since (stage {self.state['stage']})",
            }
        current = self.state["variants"]["champion"]
        try:
            target = rollback(self.state["model"], client=MlflowClient(self.tracking_uri), expected=current)
        except HPMError as exc:  # no previous champion, or the alias moved meanwhile: nothing written
            return {"ok": False, "status": 409, "error": str(exc)}
        except Exception as exc:
            return {"ok": False, "status": 503, "error": f"revert failed: {type(exc).__name__}: {exc}"}
        self._set_champion(target, current)
        self.state["stage"] = "reverted"
        return self._change("revert", f"v{target} is champion again, v{current} withdrawn ({reason})")

    def follow_champion(self, version: str, read_at: float) -> dict:
        """The registry's ``champion`` alias named ``version`` at ``read_at``: serve it. A read older than this
        actor's own last champion change is stale and ignored (the watcher's next read tells)."""
        version, current = str(version), self.state["variants"]["champion"]
        if version == current or read_at < self._champion_set_at:
            return {"ok": True, "event": None}
        if version == self.state["variants"].get("challenger"):  # promoted in the registry: the rollout ends
            self._set_champion(version, current)
            self.state["stage"] = "promoted"
        else:
            self.state["variants"]["champion"] = version
            self.state["previous_champion"] = current
            self._champion_set_at = time.time()
            if self.state["variants"].get("challenger"):  # evidence against the old champion does not carry over
                self.state.update(_fresh_experiment(time.time()))
            else:
                self.state["stage"] = "registry"
        return self._change("champion", f"v{version} is champion: the registry's alias moved (was v{current})")

    def _score_stats(self, now: float) -> ScoreStats:
        versions = [str(self.state["variants"].get(k)) for k in ("champion", "challenger")]
        return ScoreStats(
            *(_moments(self.state["scores"].get(v, [0, 0.0, 0.0])) for v in versions),
            elapsed_s=now - self.state["experiment_started"],
            diffs=_moments(self.state["diffs"]) if self._paired() else None,
        )

    def _test_interval(self) -> dict | None:
        """The sequential test's current estimate of ``challenger - champion`` and its confidence sequence (what
        the rollout decides on), or None without a challenger or before both have two labelled rows."""
        if not self.state["variants"].get("challenger"):
            return None
        sc, t = self._score_stats(time.time()), self.policy.test
        if min(sc.champion.n, sc.challenger.n) < 2:
            return None
        iv = (
            paired_interval(sc.diffs, t.alpha, t.rho2)
            if sc.diffs is not None
            else unpaired_interval(sc.champion, sc.challenger, t.alpha, t.rho2)
        )
        return {"score": t.score, "alpha": t.alpha, **asdict(iv)}

    def _decide(self) -> None:
        """Apply the rollout policy while an automatic rollout runs."""
        if self.state["stage"] != "rollout" or not self.policy.auto:
            return
        now = time.time()
        stats = {k: self._guard_stats(k) for k in ("champion", "challenger")}
        scores = self._score_stats(now)
        counts = self.state["step_counts"]
        split = (
            [counts.get("champion", 0), counts.get("challenger", 0)],
            [self.state["weights"].get("champion", 0.0), self.state["weights"].get("challenger", 0.0)],
        )
        d = decide(
            self.policy,
            self.state["weights"].get("challenger", 0.0),
            now - self.state["step_started"],
            stats["champion"],
            stats["challenger"],
            scores,
            split,
        )
        self.last_decision = f"{d.action}: {d.reason}"
        if d.action == "expand":
            self.expand(d.reason)
        elif d.action == "rollback":
            self.rollback(d.reason)
        elif d.action == "inconclusive":
            self.rollback(d.reason, stage="inconclusive")
        elif d.action == "promote":
            result = self.promote(d.reason)
            if result["ok"]:
                return
            if result.get("refused"):  # by the quality gates: the challenger goes
                self.rollback(result["error"])
            else:  # the registry failed: hold at the last step with the reason, retry on the next tick
                self.last_decision = f"hold: {result['error']}; retrying"

    # -- persistence -------------------------------------------------------------------------------------
    def _change(self, event: str, detail: str) -> dict:
        """A state change: saved (and its revision bumped) before anything else, then logged to MLflow."""
        self.state["revision"] += 1
        self.state["step_started"] = time.time()
        self.state["step_counts"] = {}
        entry = {
            "time": time.time(),
            "event": event,
            "detail": detail,
            "weights": dict(self.state["weights"]),
            "variants": dict(self.state["variants"]),
        }
        self.state["history"] = (self.state["history"] + [entry])[-_HISTORY:]
        self._save(force=True, event=(event, detail))
        self._mlflow.submit(self._log_mlflow, entry, copy.deepcopy(self.state["history"]), self.state["revision"])
        return {
            "ok": True,
            "event": event,
            "detail": detail,
            "revision": self.state["revision"],
            "weights": self.state["weights"],
        }

    def _save(self, force: bool, event: tuple[str, str] | None = None) -> None:
        now = time.time()
        if not force and now - self._last_save < 1.0:
            return
        self._last_save = now
        self._dirty = False
        state = copy.deepcopy(self.state)
        state["mlflow_run_id"] = self._run_id  # set by the MLflow thread: read here, never written there into state
        for name, s in state["stats"].items():
            s["latency_recent"] = list(self.latency.get(name, ()))[-1000:]
            s["ok_recent"] = list(self.recent_ok.get(name, ()))
        self.store.save(self.app, state, event)

    def flush(self) -> None:
        """Save now and wait for pending MLflow logging (bounded): called before the actor is stopped."""
        self._save(force=True)
        self._mlflow.submit(lambda: None).result(timeout=8)

    def _experiment(self, client) -> str:
        """The A/B experiment; with a local sqlite store its artifacts sit next to the state db, never in ./mlruns."""
        from mlflow.exceptions import MlflowException

        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        location = (
            (Path(self.store.path).parent / "artifacts" / EXPERIMENT).as_uri()
            if self.tracking_uri.startswith("sqlite:")
            else None
        )
        try:
            return client.create_experiment(EXPERIMENT, artifact_location=location)
        except MlflowException:  # created meanwhile by another app's actor
            return client.get_experiment_by_name(EXPERIMENT).experiment_id

    def _log_mlflow(self, entry: dict, history: list, step: int) -> None:
        """One MLflow run per A/B app: weights as stepped metrics, the history as an artifact (background thread)."""
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.tracking_uri)
            if not self._run_id:
                exp_id = self._experiment(client)
                self._run_id = client.create_run(
                    exp_id, run_name=f"ab-{self.app}", tags={"hpm_ray.model": self.state["model"]}
                ).info.run_id
                self._dirty = True  # the next save stores the run id
            ts = int(entry["time"] * 1000)
            for variant in ("champion", "challenger"):
                client.log_metric(
                    self._run_id, f"weight_{variant}", float(entry["weights"].get(variant, 0.0)), ts, step
                )
            client.set_tag(self._run_id, "ab.last_event", f"{entry['event']}: {entry['detail']}"[:4000])
            client.log_dict(self._run_id, history, "ab_history.json")
            self.mlflow_error = ""
        except Exception as exc:  # MLflow down must not stop serving; status shows it
            self.mlflow_error = f"{type(exc).__name__}: {exc}"
            log.warning("A/B state not logged to MLflow: %s", self.mlflow_error)


def _was_restarted() -> bool:
    """True in an actor that Ray restarted after a crash (False outside an actor, e.g. in unit tests)."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _timer(every_s: float) -> None:
    """Run ``tick`` on this actor every ``every_s``: the call runs on the actor's own thread, in order with
    router and admin calls, so the rule needs no lock; waiting for each tick keeps a slow one from piling up."""
    import ray

    me = ray.get_runtime_context().current_actor
    while True:
        time.sleep(every_s)
        try:
            ray.get(me.tick.remote())
        except Exception as exc:  # the actor is going away (tick itself never raises)
            log.warning("A/B rule timer stopped: %s", exc)
            return


# MLflow's HTTP client retries for minutes by default; the actor logs in the background but should give up soon
_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _watch_alias(every_s: float, model: str, tracking_uri: str) -> None:
    """Read the registry's ``champion`` every ``every_s`` and hand each read to the actor (in order with its other
    calls), which serves it unless it already does or the read is older than its own last change. A failed read
    is retried; the app keeps serving what it serves."""
    import ray
    from mlflow.tracking import MlflowClient

    from hpm_ray.registry.aliases import CHAMPION

    me = ray.get_runtime_context().current_actor
    client = MlflowClient(tracking_uri)
    while True:
        time.sleep(every_s)  # first: the actor finishes starting before it is called
        read_at = time.time()
        try:
            current = client.get_registered_model(model).aliases.get(CHAMPION)
            # every read goes to the actor, which compares it with what it serves: remembering the last value
            # read here would miss an alias that moved away and back between two reads (promote, then revert)
            if current is not None:
                ray.get(me.follow_champion.remote(str(current), read_at))
        except Exception as exc:  # the registry or the actor not answering: the next round tries again
            log.warning("champion alias not followed: %s", exc)


def ensure_actor(
    app: str,
    db_path: str,
    tracking_uri: str,
    policy: dict,
    init: dict,
    resume: bool,
    gates: dict | None = None,
    log_url: str | None = None,
    log_retention: tuple[float | None, int | None] = (None, None),
    follow_alias: bool = False,
):
    """The app's state actor, created (restoring from sqlite when ``resume``) if it is not running.

    It restarts whenever it dies (``max_restarts=-1``; a restart resumes from sqlite), and calls in flight
    during a restart are retried on the new instance rather than failing the router or admin call.
    """
    import ray

    actor = (
        ray.remote(num_cpus=0, max_concurrency=1, max_restarts=-1, max_task_retries=-1)(ABState)
        .options(
            name=actor_name(app),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            runtime_env={"env_vars": _MLFLOW_ENV},
        )
        .remote(app, db_path, tracking_uri, policy, init, resume, gates, log_url, log_retention, TICK_S, follow_alias)
    )
    return actor


def kill_actor(app: str) -> bool:
    """Stop the app's state actor after saving; True if one was running."""
    import ray

    try:
        actor = ray.get_actor(actor_name(app), namespace=NAMESPACE)
    except ValueError:
        return False
    try:
        ray.get(actor.flush.remote(), timeout=10)
    except Exception as exc:  # dead or hung: its last save in sqlite stands
        log.warning("A/B state actor not flushed before stopping: %s", exc)
    finally:
        ray.kill(actor)  # no_restart: stopped for good
    return True
