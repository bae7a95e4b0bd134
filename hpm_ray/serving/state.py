"""A/B state (variants, weights, stage, history, live metrics) in one small Ray actor, persisted in sqlite.

Routers read the state every ~0.2 s and send their per-request records in batches, so weights change
live without restarting a replica, and metrics from every router replica meet in one place. Each state
change is written to sqlite (restored when the app restarts) and logged to MLflow (run ``ab-<app>``).
The sqlite file must be reachable from the node the actor runs on (a single node, or a shared path).
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
import time
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np

from hpm_ray.errors import HPMError
from hpm_ray.serving.policy import RolloutPolicy, VariantStats, decide

NAMESPACE = "hpm_ray"
EXPERIMENT = "hpm-ray-ab"
SLOTS = ("champion", "challenger", "shadow")
_LATENCY_WINDOW = 5000
_REQUEST_MEMORY = 200_000  # request ids kept for label feedback
_HISTORY = 200
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
    }


def _same_label(a, b) -> bool:
    """Labels from JSON and from the model compare equal across int/float/str spellings (1, 1.0, "1")."""

    def norm(x):
        try:
            f = float(x)
            return str(int(f)) if f.is_integer() else repr(f)
        except (TypeError, ValueError):
            return str(x)

    return norm(a) == norm(b)


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


class ABState:
    """The actor's body. Public methods are called by routers and admin endpoints; none raises to a router:
    a refused admin call returns ``{"ok": False, "error": ...}``."""

    def __init__(
        self,
        app: str,
        db_path: str,
        tracking_uri: str,
        policy: dict,
        init: dict,
        resume: bool = True,
        gates: dict | None = None,
    ):
        self.app = app
        self.gates = gates
        self.store = SqliteStore(db_path)
        self.tracking_uri = tracking_uri
        self.policy = RolloutPolicy.model_validate(policy)
        stored = self.store.load(app) if resume else None
        self.restored = bool(stored and stored.get("model") == init["model"])
        self.state = stored if self.restored else copy.deepcopy(init)
        self.latency: dict[str, deque] = {}
        for name, s in self.state.get("stats", {}).items():
            self.latency[name] = deque(s.pop("latency_recent", []), maxlen=_LATENCY_WINDOW)
        self.requests: OrderedDict[str, list] = OrderedDict()
        self.last_decision = "restored from sqlite" if self.restored else "started"
        self.mlflow_error = ""
        self._run_id = self.state.get("mlflow_run_id")
        self._last_save = 0.0
        self._last_tick = 0.0
        if not self.restored:
            self._change(
                "start",
                f"champion v{init['variants']['champion']}"
                + (f", challenger v{init['variants']['challenger']}" if init["variants"]["challenger"] else ""),
            )

    # -- reads -------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """What routers need: variants, weights, revision."""
        return {k: self.state[k] for k in ("model", "variants", "weights", "revision", "stage")}

    def status(self) -> dict:
        out = {k: v for k, v in self.state.items() if k not in ("stats", "history")}
        out["history"] = self.state["history"][-20:]
        out["metrics"] = {name: self._metrics(name) for name in self.state["stats"]}
        out["policy"] = self.policy.model_dump()
        out["last_decision"] = self.last_decision
        out["restored"] = self.restored
        out["mlflow_error"] = self.mlflow_error
        out["gates"] = self.gates  # the app's gate overrides: the drift watcher gates its retrained models with them
        return out

    def _metrics(self, name: str) -> dict:
        s = self.state["stats"][name]
        lat = np.asarray(self.latency.get(name, ()), dtype=float)
        return {
            "version": s.get("version"),
            "requests": s["requests"],
            "errors": s["errors"],
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "mean_confidence": s["conf_sum"] / s["conf_n"] if s["conf_n"] else None,
            "labelled": s["labelled"],
            "accuracy": s["correct"] / s["labelled"] if s["labelled"] else None,
        }

    def _stats(self, name: str) -> dict:
        return self.state["stats"].setdefault(
            name,
            {
                "version": self.state["variants"].get(name),
                "requests": 0,
                "errors": 0,
                "conf_sum": 0.0,
                "conf_n": 0,
                "labelled": 0,
                "correct": 0,
            },
        )

    # -- traffic -----------------------------------------------------------------------------------------
    def record(self, records: list[tuple]) -> None:
        """``(request_id, variant, ok, latency_ms, confidence | None, predictions | None)`` per request."""
        for rid, variant, ok, latency_ms, confidence, predictions in records:
            s = self._stats(variant)
            s["requests"] += 1
            s["errors"] += 0 if ok else 1
            self.latency.setdefault(variant, deque(maxlen=_LATENCY_WINDOW)).append(latency_ms)
            if confidence is not None:
                s["conf_sum"] += confidence
                s["conf_n"] += 1
            if ok and predictions is not None:
                self.requests.setdefault(rid, []).append((variant, predictions))
                self.requests.move_to_end(rid)
        while len(self.requests) > _REQUEST_MEMORY:
            self.requests.popitem(last=False)
        self._tick()
        self._save(force=False)

    def feedback(self, request_id: str, labels: list) -> dict:
        """Score the predictions of ``request_id`` (every variant that answered it, shadow included)."""
        served = self.requests.get(request_id)
        if served is None:
            return {"ok": False, "status": 404, "error": f"unknown request id {request_id!r} (or too old)"}
        for variant, predictions in served:
            if len(predictions) != len(labels):
                return {
                    "ok": False,
                    "status": 422,
                    "error": f"request {request_id} had {len(predictions)} rows; got {len(labels)} labels",
                }
        self.requests.pop(request_id)
        for variant, predictions in served:
            s = self._stats(variant)
            s["labelled"] += len(labels)
            s["correct"] += sum(_same_label(p, y) for p, y in zip(predictions, labels))
        self._tick()
        self._save(force=False)
        return {"ok": True, "variants": [v for v, _ in served]}

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
        self.latency.clear()
        return self._change("start", f"challenger v{challenger} at {traffic:g}%")

    def expand(self, reason: str = "manual") -> dict:
        if not self.state["variants"].get("challenger"):
            return {"ok": False, "status": 409, "error": "no challenger to expand"}
        traffic = self.policy.next_step(self.state["weights"].get("challenger", 0.0))
        self.state["weights"] = {"champion": 100.0 - traffic, "challenger": traffic}
        return self._change("expand", f"challenger -> {traffic:g}% ({reason})")

    def rollback(self, reason: str = "manual") -> dict:
        challenger = self.state["variants"].get("challenger")
        if not challenger:
            return {"ok": False, "status": 409, "error": "no challenger to roll back"}
        self.state["variants"]["challenger"] = None
        self.state["weights"] = {"champion": 100.0}
        self.state["stage"] = "rolled_back"
        return self._change("rollback", f"challenger v{challenger} removed: {reason}")

    def promote(self, reason: str = "manual") -> dict:
        """Promote the challenger through the registry's quality gates; refused gates leave serving unchanged."""
        from mlflow.tracking import MlflowClient

        from hpm_ray.registry.aliases import promote

        challenger = self.state["variants"].get("challenger")
        if not challenger:
            return {"ok": False, "status": 409, "error": "no challenger to promote"}
        try:
            promote(self.state["model"], challenger, self.gates, client=MlflowClient(self.tracking_uri))
        except HPMError as exc:
            return {"ok": False, "status": 409, "error": str(exc)}
        self.state["variants"].update(champion=challenger, challenger=None)
        self.state["weights"] = {"champion": 100.0}
        self.state["stage"] = "promoted"
        return self._change("promote", f"v{challenger} is champion ({reason})")

    def _tick(self) -> None:
        """Apply the rollout policy (at most every 0.1 s) while an automatic rollout runs."""
        now = time.time()
        if self.state["stage"] != "rollout" or not self.policy.auto or now - self._last_tick < 0.1:
            return
        self._last_tick = now
        stats = {
            k: VariantStats(
                **{f: self.state["stats"].get(k, {}).get(f, 0) for f in ("requests", "errors", "labelled", "correct")}
            )
            for k in ("champion", "challenger")
        }
        d = decide(
            self.policy,
            self.state["weights"].get("challenger", 0.0),
            now - self.state["step_started"],
            stats["champion"],
            stats["challenger"],
        )
        self.last_decision = f"{d.action}: {d.reason}"
        if d.action == "expand":
            self.expand(d.reason)
        elif d.action == "rollback":
            self.rollback(d.reason)
        elif d.action == "promote":
            result = self.promote(d.reason)
            if not result["ok"]:
                self.rollback(result["error"])

    # -- persistence -------------------------------------------------------------------------------------
    def _change(self, event: str, detail: str) -> dict:
        self.state["revision"] += 1
        self.state["step_started"] = time.time()
        entry = {
            "time": time.time(),
            "event": event,
            "detail": detail,
            "weights": dict(self.state["weights"]),
            "variants": dict(self.state["variants"]),
        }
        self.state["history"] = (self.state["history"] + [entry])[-_HISTORY:]
        self._log_mlflow(entry)
        self._save(force=True, event=(event, detail))
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
        state = copy.deepcopy(self.state)
        for name, s in state["stats"].items():
            s["latency_recent"] = list(self.latency.get(name, ()))[-1000:]
        self.store.save(self.app, state, event)

    def flush(self) -> None:
        self._save(force=True)

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

    def _log_mlflow(self, entry: dict) -> None:
        """One MLflow run per A/B app: weights and stage as stepped metrics, the history as an artifact."""
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self.tracking_uri)
            if not self._run_id:
                exp_id = self._experiment(client)
                self._run_id = client.create_run(
                    exp_id, run_name=f"ab-{self.app}", tags={"hpm_ray.model": self.state["model"]}
                ).info.run_id
                self.state["mlflow_run_id"] = self._run_id
            step = self.state["revision"]
            ts = int(entry["time"] * 1000)
            for variant in ("champion", "challenger"):
                client.log_metric(
                    self._run_id, f"weight_{variant}", float(entry["weights"].get(variant, 0.0)), ts, step
                )
            client.set_tag(self._run_id, "ab.last_event", f"{entry['event']}: {entry['detail']}"[:4000])
            client.log_dict(self._run_id, self.state["history"], "ab_history.json")
        except Exception as exc:  # MLflow down must not stop serving; status shows it
            self.mlflow_error = f"{type(exc).__name__}: {exc}"
            log.warning("A/B state not logged to MLflow: %s", self.mlflow_error)


def ensure_actor(
    app: str, db_path: str, tracking_uri: str, policy: dict, init: dict, resume: bool, gates: dict | None = None
):
    """The app's state actor, created (restoring from sqlite when ``resume``) if it is not running."""
    import ray

    actor = (
        ray.remote(num_cpus=0, max_concurrency=1)(ABState)
        .options(name=actor_name(app), namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
        .remote(app, db_path, tracking_uri, policy, init, resume, gates)
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
    finally:
        ray.kill(actor)
    return True
