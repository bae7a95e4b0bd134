"""The A/B Serve application: a FastAPI ingress router in front of the champion/challenger/shadow variants.

Two placements: ``deployments`` (one deployment per variant: isolation, independent scaling, one more
handle hop) and ``fast_path`` (the router's replicas hold the models: no extra hop). ``build_app`` is the
builder for ``serve run serve/ab.yaml``; :func:`start_ab` / :func:`stop` are the Python entry.
"""

# No "from __future__ import annotations": FastAPI must see the real Request type on ingress methods.

import asyncio
import hmac
import logging
import os
import random
import secrets
import time
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator, model_validator
from ray import serve
from ray.exceptions import RayError

from hpm_ray.config import Spec, load_spec
from hpm_ray.errors import HPMError, last_line
from hpm_ray.serving.client import FEEDBACK_TOKEN_ENV, TOKEN_ENV
from hpm_ray.serving.models import InputSpec, ModelPool, confidence
from hpm_ray.serving.online import adaptive, state_from_json
from hpm_ray.serving.policy import RolloutPolicy
from hpm_ray.serving.predlog import (
    STATUS,
    JoinResult,
    Label,
    Prediction,
    PredictionLog,
    PredLogSpec,
    new_request_id,
    outputs_of,
)
from hpm_ray.serving.routing import choose
from hpm_ray.serving.schemas import PayloadError, load_json, parse_payload, read_body, records

log = logging.getLogger(__name__)
_PENDING_PREDICTIONS = 200_000  # predictions a router keeps while the log's database is unreachable
ADMIN_MAX_BYTES = 64_000  # an admin body is a few settings


class ServeSpec(Spec):
    """``args`` of the Serve application (``serve/ab.yaml``); refs are versions or aliases."""

    model: str
    champion: str = "champion"
    challenger: str | None = None
    shadow: str | None = None
    challenger_traffic: float = Field(10.0, gt=0, lt=100)
    placement: Literal["fast_path", "deployments"] = "fast_path"
    app_name: str = "hpm-ab"
    route_prefix: str = "/"
    token: str | None = None  # admin bearer token; default $HPM_RAY_SERVE_TOKEN; none: admin API disabled
    feedback_token: str | None = None  # label feedback token; default $HPM_RAY_FEEDBACK_TOKEN; none: /feedback off
    resume: bool = True  # restore the A/B state saved for this app (same model) instead of starting fresh
    max_request_bytes: int = Field(1_000_000, gt=0)
    max_rows: int = Field(10_000, gt=0)
    allow_nan: bool = False  # nulls in any column; models registered with an hpm-ray schema take them anyway
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    router_replicas: int = Field(1, ge=1)
    variant_replicas: int = Field(1, ge=1)
    # Serve's autoscaling_config (min_replicas, max_replicas, target_ongoing_requests, ...) instead of a fixed count
    router_autoscaling: dict | None = None
    variant_autoscaling: dict | None = None
    max_ongoing_requests: int = Field(200, ge=1)
    state_db: str | None = None  # default: ab_state.sqlite next to the MLflow store
    tracking_uri: str | None = None
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)
    prediction_log: PredLogSpec = Field(default_factory=PredLogSpec)  # where labels join their predictions
    max_feedback_items: int = Field(10_000, gt=0)  # labels per POST /feedback
    variant_timeout_s: float | None = Field(None, gt=0)  # a challenger slower than this: an error, the champion answers
    gates: dict[str, dict[str, dict]] | None = None  # {kind: {metric: {low, high}}} over the default gates
    # feature rows of answered requests, logged with their predictions (the drift check reads the newest; a
    # retrain joins them to late labels): on or off, and the sampled share of requests
    served_log: bool = True
    served_fraction: float = Field(1.0, ge=0, le=1)

    @field_validator("router_autoscaling", "variant_autoscaling")
    @classmethod
    def _serve_autoscaling(cls, v: dict | None) -> dict | None:
        """Checked here against Serve's own model (it ignores unknown keys: a typo would be silently dropped)."""
        if v is None:
            return None
        from ray.serve.config import AutoscalingConfig

        unknown = sorted(set(v) - set(AutoscalingConfig.model_fields))
        if unknown:
            raise ValueError(
                f"unknown autoscaling setting(s) {unknown}; Serve takes {sorted(AutoscalingConfig.model_fields)}"
            )
        AutoscalingConfig(**v)  # its ValidationError is a ValueError: reported as the spec's
        return v

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self):
        for who in ("router", "variant"):
            if getattr(self, f"{who}_autoscaling") is not None and getattr(self, f"{who}_replicas") != 1:
                raise ValueError(f"give {who}_replicas or {who}_autoscaling, not both")
        return self

    def scaling(self, who: Literal["router", "variant"]) -> dict:
        """Serve deployment options: a fixed replica count, or the autoscaling config."""
        auto = getattr(self, f"{who}_autoscaling")
        if auto is not None:
            return {"autoscaling_config": auto}
        return {"num_replicas": getattr(self, f"{who}_replicas")}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


api = FastAPI(title="hpm-ray A/B", docs_url=None, redoc_url=None)


# Helpers of the ingress methods sit above the deployment classes: Serve serialises a class when it is
# decorated, so module functions defined below it would be missing in the replicas.
def _answer(j: JoinResult) -> dict:
    return {"request_id": j.request_id, "outcome": j.outcome, "status": j.status, "reason": j.reason}


def _rid(item) -> str | None:
    return item.get("request_id") if isinstance(item, dict) and isinstance(item.get("request_id"), str) else None


def _feedback_problem(item) -> str | None:
    """Why one feedback item is malformed, or None."""
    if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
        return "expected {'request_id': str, 'label': value} (or 'labels': [..] for a multi-row request)"
    if ("label" in item) == ("labels" in item):
        return "give exactly one of 'label' (one-row request) and 'labels' (one per row)"
    if "labels" in item and (not isinstance(item["labels"], list) or not item["labels"]):
        return "'labels' must be a non-empty list"
    return None


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Variant:
    """One variant's replicas (``deployments`` placement): loads whatever version the router asks for."""

    def __init__(self, spec: dict):
        s = ServeSpec.model_validate(spec)
        self.pool = ModelPool(s.model, s.tracking_uri, s.max_batch_size, s.batch_wait_timeout_s)

    async def warm(self, version: str, keep: list[str]) -> InputSpec:
        """Load ``version`` and drop what no variant serves any more (``keep``)."""
        spec = await self.pool.aload(version)
        self.pool.retain([*keep, version])
        return spec

    async def predict(self, version: str, frame):
        return await self.pool.predict(version, frame)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class ABRouter:
    """Parses, routes (weighted or sticky), batches, records; admin endpoints behind a bearer token."""

    def __init__(self, spec: dict, variants: dict | None = None):
        import ray
        from ray.util import metrics

        from hpm_ray.serving.state import NAMESPACE, actor_name

        self.spec = ServeSpec.model_validate(spec)
        app = self.spec.app_name
        try:
            self.state = ray.get_actor(actor_name(app), namespace=NAMESPACE)
        except ValueError:
            raise RuntimeError(f"the A/B state actor of app {app!r} is not running") from None
        pl = self.spec.prediction_log
        self.predlog = PredictionLog(pl.url, pl.max_age_days, pl.max_rows)  # url resolved by build_app
        self.predictions: list[Prediction] = []  # written by _write_predictions, off the request path
        self._write_lock = asyncio.Lock()
        self.handles = variants  # None: fast path, this replica holds the models
        s = self.spec
        # With variant deployments the router only needs each version's feature columns, not the model.
        self.pool = ModelPool(
            s.model, s.tracking_uri, s.max_batch_size, s.batch_wait_timeout_s, hold_models=variants is None
        )
        self.features: dict[str, InputSpec] = {}
        self.failed: dict[str, str] = {}  # versions this replica could not load: their requests count as errors
        try:  # build() starts the state actor without waiting for it: it starts while this replica does
            self.snapshot = ray.get(self.state.snapshot.remote())
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(
                f"the A/B state actor of app {app!r} could not start: {last_line(exc) or type(exc).__name__}"
            ) from None
        self._refresh_lock = asyncio.Lock()  # one refresh at a time: an admin call's and the follow loop's
        for slot, version in self.snapshot["variants"].items():
            if not version or version in self.features:
                continue
            if slot == "champion":  # nothing to serve without it: fails the replica (and the deploy)
                self.features[version] = self.pool.load(version)
                continue
            try:  # another version that cannot load never stops the champion from serving
                self.features[version] = self.pool.load(version)
            except Exception as exc:
                self._failed(version, exc)
        self.online_state: dict[str, dict] = {}  # version -> its PID trackers: its adaptive interval
        try:
            self._sync_online(list(self.features))
        except Exception as exc:  # the log's database away: static intervals until the next round reaches it
            log.warning("online interval state not read: %s", exc)
        self.buffer: list[tuple] = []  # (variant, ok, latency_ms, confidence, routed) per answer, for the state actor
        self.unexported: list[tuple] = []  # the same, their metrics not yet recorded (whether the actor is up or not)
        self.shadow_tasks: dict[str, asyncio.Task] = {}
        self._loop_task = self._log_task = None
        self.state_error = ""  # the last failed call to the state actor ("" when the last one worked)
        tags = ("variant",)
        self.m_requests = metrics.Counter("hpm_ab_requests", "requests per variant", tag_keys=tags)
        self.m_errors = metrics.Counter("hpm_ab_errors", "failed model calls per variant", tag_keys=tags)
        self.m_latency = metrics.Histogram(
            "hpm_ab_latency_ms",
            "router latency per variant (ms)",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
            tag_keys=tags,
        )
        self.m_confidence = metrics.Histogram(
            "hpm_ab_confidence",
            "mean prediction confidence per request",
            boundaries=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0],
            tag_keys=tags,
        )

    @staticmethod
    def _versions(snapshot: dict) -> list[str]:
        """What a replica keeps loaded: the variants' versions and the previous champion (a revert is instant)."""
        return [v for v in (*snapshot["variants"].values(), snapshot.get("previous_champion")) if v]

    def _failed(self, version: str, exc: Exception) -> None:
        self.failed[version] = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("v%s cannot be loaded; its requests count as errors: %s", version, self.failed[version])

    # -- background: follow the state, flush records ------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            loop = asyncio.get_running_loop()
            self._loop_task = loop.create_task(self._follow())
            self._log_task = loop.create_task(self._log_predictions())

    async def _follow(self) -> None:
        """Every 0.2 s: hand buffered records to the state actor and pick up its latest snapshot."""
        while True:
            await asyncio.sleep(0.2)
            try:
                await self._export_metrics()
                self._flush()
                await self._refresh()
                self.state_error = ""
            except Exception as exc:  # keep serving on the last good snapshot; find the actor again by name
                self.state_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("A/B state refresh failed: %s", self.state_error)
                self._refind_state()

    def _refind_state(self) -> None:
        import ray

        from hpm_ray.serving.state import NAMESPACE, actor_name

        try:
            self.state = ray.get_actor(actor_name(self.spec.app_name), namespace=NAMESPACE)
        except ValueError:  # not there (yet): the next round tries again
            pass

    async def _log_predictions(self) -> None:
        """Every ``prediction_log.flush_s``: append the buffered predictions to the durable log in one batch, and
        read the online trackers other replicas' feedback moved."""
        while True:
            await asyncio.sleep(self.spec.prediction_log.flush_s)
            await self._write_predictions()
            await self._read_online()

    def _sync_online(self, versions: list[str]) -> None:
        """The trackers of the served forecasters with online intervals, from the log (started there the first
        time a version is served); blocking: called off the event loop, and once at start."""
        cals = {v: self.pool.online(v) for v in versions}
        cals = {v: c for v, c in cals.items() if c is not None}
        if not cals:
            self.online_state = {}
            return
        found = self.predlog.online_states(self.spec.app_name, list(cals))
        for v, cal in cals.items():
            if v not in found:
                found[v] = self.predlog.start_online(self.spec.app_name, v, cal.to_dict())
        self.online_state = {v: state_from_json(st) for v, (st, _) in found.items()}

    async def _read_online(self) -> None:
        try:
            await asyncio.to_thread(self._sync_online, list(self.features))
        except Exception as exc:  # keep serving the last trackers read
            log.warning("online interval state not read: %s", exc)

    def _adaptive(self, version: str, frame, outputs: dict | None) -> tuple[list | None, dict | None]:
        """The adaptive interval of each row and the record its label will update with, or (None, None) for a
        version without online intervals (or before its trackers are read)."""
        cal, held = self.pool.online(version), self.online_state.get(str(version))
        if cal is None or held is None or outputs is None or "values" not in outputs:
            return None, None
        try:
            vol = frame[cal.vol_feature].to_numpy(dtype=float) if cal.vol_feature in frame.columns else None
            return adaptive(cal, held, outputs["values"], vol)
        except Exception as exc:  # the static interval still answers
            log.warning("v%s: no adaptive interval: %s", version, exc)
            return None, None

    async def _write_predictions(self) -> None:
        """Append what is buffered; returns once everything buffered before the call is committed (the lock:
        a feedback call must not join while the timed flush still writes the prediction it labels)."""
        async with self._write_lock:
            batch, self.predictions = self.predictions, []  # swapped on the event loop: no append is lost
            if not batch:
                return
            try:
                await asyncio.to_thread(self.predlog.append, batch)
            except Exception as exc:  # the database away: keep the rows (bounded) for the next round
                log.warning("predictions not logged: %s", exc)
                self.predictions = (batch + self.predictions)[-_PENDING_PREDICTIONS:]

    async def __del__(self):
        """Serve stops a replica (scale-down, redeploy) once its requests have drained: hand over what is still
        buffered, so no count or prediction is lost. Serve awaits this (an async ``__del__``); the process goes
        after it. A shadow still answering is waited for briefly; the predictions' timed flush still writing is
        waited for by the lock."""
        if self.shadow_tasks:
            await asyncio.wait(list(self.shadow_tasks.values()), timeout=5)
        buffered, self.buffer = self.buffer, []
        try:
            if buffered:
                await asyncio.wait_for(self.state.record.remote(buffered), timeout=10)
        except Exception as exc:
            log.warning("%d request records lost at shutdown: %s", len(buffered), exc)
        await self._write_predictions()
        if self.predictions:  # the log's database unreachable: they stay unlogged (their labels get 404)
            log.warning("%d buffered predictions lost at shutdown", len(self.predictions))

    async def _refresh(self) -> None:
        async with self._refresh_lock:  # else an older snapshot still loading could be swapped in after a newer one
            await self._apply(await self.state.snapshot.remote())

    async def _apply(self, snap: dict) -> None:
        if snap["revision"] == self.snapshot["revision"]:
            return
        keep = self._versions(snap)
        for slot, version in snap["variants"].items():
            if version and version not in self.features:  # a failed version is tried again at each change
                try:
                    if self.handles is not None:
                        await self.handles[slot].warm.remote(version, keep)
                    self.features[version] = await self.pool.aload(version)
                    self.failed.pop(version, None)
                except Exception as exc:
                    if slot == "champion":  # keep serving the last snapshot's champion; retried next round
                        raise
                    self._failed(version, exc)
        self.snapshot = snap  # swap once the champion is loaded: no request waits on a load
        self.pool.retain(keep)  # versions no variant serves any more leave the replica
        self.features = {v: f for v, f in self.features.items() if v in keep}
        self.failed = {v: r for v, r in self.failed.items() if v in keep}

    def _flush(self) -> None:
        if self.buffer:
            self.state.record.remote(self.buffer)  # actor calls from one caller run in order
            self.buffer = []

    async def _export_metrics(self) -> None:
        """The Prometheus metrics of the answers since the last round, recorded from a worker thread: the Ray metric
        calls of every answer on the event loop, which every request of the replica waits for, were a measurable
        share of the router's loop time under load (BENCHMARKS.md, "Where the fast path's time goes")."""
        batch, self.unexported = self.unexported, []
        if batch:
            await asyncio.to_thread(self._observe, batch)

    def _observe(self, batch: list[tuple]) -> None:
        counts: dict[tuple[str, bool], int] = {}
        for variant, ok, latency, conf, _ in batch:
            counts[variant, ok] = counts.get((variant, ok), 0) + 1
            self.m_latency.observe(latency, tags={"variant": variant})
            if conf is not None:
                self.m_confidence.observe(conf, tags={"variant": variant})
        for (variant, ok), n in counts.items():
            self.m_requests.inc(n, tags={"variant": variant})
            if not ok:
                self.m_errors.inc(n, tags={"variant": variant})

    # -- inference ----------------------------------------------------------------------------------------
    async def _infer(self, slot: str, version: str, frame):
        if self.handles is None:  # loaded at a state change (before the swap): never here
            return await self.pool.predict(version, frame, load=False)
        return await self.handles[slot].predict.remote(version, frame)

    def _record(
        self,
        rid: str,
        variant: str,
        version: str,
        ok: bool,
        started: float,
        out=None,
        routed=True,
        key=None,
        features=None,
        outputs: dict | None = None,
        online: dict | None = None,
    ) -> None:
        """Count one answer and log it; ``outputs`` (:func:`outputs_of` of ``out``, when already computed) gets the
        ``online`` record of the rows' served margins (:func:`hpm_ray.serving.online.adaptive`)."""
        latency = (time.perf_counter() - started) * 1000
        if outputs is None and out is not None:
            outputs = outputs_of(out)
        record = (variant, ok, latency, confidence(outputs), routed)
        self.buffer.append(record)
        self.unexported.append(record)
        if outputs is not None and online is not None:
            outputs = {**outputs, "online": online}
        matures = self.pool.matures_s(version)
        if outputs is not None and matures is not None:  # the feedback join refuses its value before then
            outputs = {**outputs, "matures_s": matures}
        if outputs is not None:
            self.predictions.append(
                Prediction(
                    rid,
                    self.spec.app_name,
                    variant,
                    str(version),
                    outputs,
                    sticky_key=key,
                    model=self.spec.model,
                    features=features,
                )
            )
        if len(self.buffer) >= 500:
            self._flush()

    def _parse(self, body: bytes, version: str):
        inputs = self.features[version]
        s = self.spec
        return parse_payload(body, inputs, s.max_request_bytes, s.max_rows, s.allow_nan)

    def _frame_for(self, version: str, champion: str, body: bytes, parsed):
        """The input of a non-champion ``version``: the champion's parsed frame when both take the same
        columns, else the body parsed against its own schema; a version that failed to load, or cannot take
        the payload, raises (an error of that version, never of the client)."""
        if version in self.failed:
            raise RuntimeError(f"v{version} could not be loaded: {self.failed[version]}")
        if self.features[version] == self.features[champion]:
            return parsed.frame
        return self._parse(body, version).frame

    async def _shadow(self, rid: str, version: str, champion: str, body: bytes, parsed, key: str | None) -> None:
        started = time.perf_counter()
        try:
            frame = self._frame_for(version, champion, body, parsed)
            out = await asyncio.wait_for(self._infer("shadow", version, frame), self.spec.variant_timeout_s)
            outputs = outputs_of(out)
            _, online = self._adaptive(version, frame, outputs)
            self._record(
                rid, "shadow", version, True, started, out, routed=False, key=key, outputs=outputs, online=online
            )
        except Exception:
            self._record(rid, "shadow", version, False, started, routed=False)

    @api.post("/predict")
    async def predict(self, request: Request):
        started = time.perf_counter()
        self._ensure_loop()
        try:
            body = await read_body(request, self.spec.max_request_bytes)
        except PayloadError as exc:
            return _error(exc.status, exc.message)
        snap = self.snapshot
        key = request.headers.get("x-request-key")
        variant = choose(snap["weights"], key)
        version = snap["variants"][variant]
        try:  # the client's payload is judged by the champion's schema, whoever answers
            parsed = self._parse(body, snap["variants"]["champion"])
        except PayloadError as exc:
            return _error(exc.status, exc.message)
        frame = parsed.frame
        rid = new_request_id()
        routed = True
        try:
            if variant != "champion":  # its own parse, load, timeout and model errors are its errors
                frame = self._frame_for(version, snap["variants"]["champion"], body, parsed)
            limit = None if variant == "champion" else self.spec.variant_timeout_s
            out = await asyncio.wait_for(self._infer(variant, version, frame), limit)
        except Exception as exc:  # TimeoutError included: the champion answers instead
            self._record(rid, variant, version, False, started)
            if variant == "champion":
                return _error(503, f"model v{version} failed: {type(exc).__name__}")
            routed = False  # the champion's answer below is a fallback, not what the weights chose
            variant, version, frame = "champion", snap["variants"]["champion"], parsed.frame
            try:
                out = await self._infer(variant, version, frame)
            except Exception as exc2:
                self._record(rid, variant, version, False, started, routed=False)
                return _error(503, f"model v{version} failed: {type(exc2).__name__}")
        outputs = outputs_of(out)
        intervals_adaptive, online = self._adaptive(version, frame, outputs)
        s = self.spec  # the rows it answered go to the prediction log with the answer (drift check, retrain)
        logged = s.served_log and (s.served_fraction >= 1 or random.random() < s.served_fraction)
        self._record(
            rid,
            variant,
            version,
            True,
            started,
            out,
            routed=routed,
            key=key,
            features=frame if logged else None,
            outputs=outputs,
            online=online,
        )
        shadow = snap["variants"].get("shadow")
        if shadow:
            task = asyncio.get_running_loop().create_task(
                self._shadow(rid, shadow, snap["variants"]["champion"], body, parsed, key)
            )
            self.shadow_tasks[rid] = task  # feedback for this request waits for the shadow's answer
            task.add_done_callback(lambda _t, rid=rid: self.shadow_tasks.pop(rid, None))
        # A ready JSONResponse: FastAPI would otherwise walk every cell through jsonable_encoder first.
        answer = {
            "request_id": rid,
            "variant": variant,
            "model": snap["model"],
            "model_version": version,
            "predictions": records(out),
        }
        if intervals_adaptive is not None:  # a forecaster with online intervals: beside the static lo_*/hi_*
            answer["intervals_adaptive"] = intervals_adaptive
        if parsed.ignored:  # MLflow's scoring server drops them silently; say so
            answer["ignored_columns"] = list(parsed.ignored)
        if parsed.unseen:  # answered with the category as missing, as the model was trained to
            answer["unseen_categories"] = parsed.unseen
        return JSONResponse(answer)

    @api.post("/feedback")
    async def feedback(self, request: Request):
        """Labels for earlier predictions: ``{"request_id", "label"}`` (``"labels": [...]`` for a multi-row
        request), or a list of them. Needs ``Authorization: Bearer <feedback token>``. One object: the HTTP
        status is its outcome's (200 joined, 404 unknown, 409 duplicate, 422 expired or invalid, 425 a forecast's
        value posted before its horizon passed); a list: 200
        with one result per item. Answers never name the variant (a client must not learn whom it labels).
        A forecaster's realised value (posted once its h bars have passed; earlier is refused when the version
        records its bar length) also moves the
        adaptive interval of the version that answered (:mod:`hpm_ray.serving.online`)."""
        self._ensure_loop()
        denied = self._auth(request, self.spec.feedback_token, FEEDBACK_TOKEN_ENV, "feedback")
        if denied is not None:
            return denied
        try:
            body = load_json(await read_body(request, self.spec.max_request_bytes), self.spec.max_request_bytes)
        except PayloadError as exc:
            return _error(exc.status, exc.message)
        single = isinstance(body, dict)
        items = [body] if single else body
        if not isinstance(items, list) or not items:
            return _error(422, "expected {'request_id': str, 'label': value} or a non-empty list of them")
        if len(items) > self.spec.max_feedback_items:
            return _error(413, f"{len(items)} labels; the limit is {self.spec.max_feedback_items} per request")
        results: list[dict | None] = []
        labels: list[Label] = []
        for item in items:  # a malformed item is answered on its own; the others still join
            problem = _feedback_problem(item)
            if problem is None:
                labels.append(Label(item["request_id"], item["labels"] if "labels" in item else [item["label"]]))
                results.append(None)
            else:
                results.append({"request_id": _rid(item), "outcome": "invalid", "status": 422, "reason": problem})
        pending = [self.shadow_tasks[lb.request_id] for lb in labels if lb.request_id in self.shadow_tasks]
        if pending:  # a shadow still answering this request: its prediction joins too
            await asyncio.wait(pending, timeout=5)
        await self._write_predictions()  # this replica's own recent predictions are in the log first
        try:
            joined = iter(await asyncio.to_thread(self.predlog.join, labels, self.spec.rollout.test.score))
        except Exception as exc:  # the database unreachable: nothing was counted, the client may retry
            return _error(503, f"prediction log unavailable: {type(exc).__name__}")
        out = [r if r is not None else _answer(next(joined)) for r in results]
        await self._read_online()  # this replica answers with the trackers these labels moved at once
        if single:
            return JSONResponse(out[0], status_code=out[0]["status"])
        counts = {k: sum(r["outcome"] == k for r in out) for k in STATUS}
        return {"results": out, **counts}

    @api.get("/healthz")
    async def healthz(self):
        """200 ``{"status": "ok"}``; 503 ``{"status": "degraded"}`` while the state actor does not answer
        (requests are still served on the last weights, but no rollout decision or admin call happens)."""
        self._ensure_loop()
        try:
            await asyncio.wait_for(self.state.snapshot.remote(), timeout=2.0)
            reason = ""
        except Exception as exc:
            reason = f"A/B state actor unreachable: {type(exc).__name__}"
            self._refind_state()
        body = {
            "status": "degraded" if reason else "ok",
            "model": self.snapshot["model"],
            "variants": self.snapshot["variants"],
            "placement": self.spec.placement,
            "loaded_versions": sorted(self.pool.versions),  # what this replica holds: the variants, the last champion
            "failed_versions": sorted(self.failed),  # this replica could not load them (their requests: errors)
        }
        if reason:
            body["reason"] = reason
            return JSONResponse(body, status_code=503)
        return body

    @api.get("/ab/status")
    async def status(self, request: Request):
        """The A/B state; without the admin token only weights and counts (no errors, gates, run ids)."""
        from hpm_ray.serving.state import public_status

        self._ensure_loop()
        self._flush()
        try:
            full = await self.state.status.remote()
        except RayError as exc:
            self._refind_state()
            return _error(503, f"A/B state actor unavailable ({type(exc).__name__}); retry shortly")
        return full if self._auth(request) is None else public_status(full)

    # -- admin --------------------------------------------------------------------------------------------
    def _auth(
        self, request: Request, configured: str | None = None, env: str = TOKEN_ENV, what: str = "admin"
    ) -> JSONResponse | None:
        """None if the bearer token matches; else 401 (none sent) or 403 (wrong, or none configured)."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            return JSONResponse(
                {"error": f"{what} call needs 'Authorization: Bearer <token>'"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = "token" if what == "admin" else f"{what}_token"
        token = (self.spec.token if what == "admin" else configured) or os.environ.get(env)
        if not token:
            return _error(403, f"{what} API disabled: no token configured (set '{key}' or ${env})")
        if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            return _error(403, "invalid token")
        return None

    async def _admin(self, request: Request, call) -> JSONResponse | dict:
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            raw = await read_body(request, ADMIN_MAX_BYTES)
            body = load_json(raw, ADMIN_MAX_BYTES) if raw.strip() else {}
        except PayloadError as exc:
            return _error(exc.status, exc.message)
        if not isinstance(body, dict):
            return _error(422, "expected a JSON object")
        try:
            result = await call(body)
        except (TypeError, ValueError) as exc:
            return _error(422, str(exc))
        except RayError as exc:  # nothing changed: the actor was not there to change it
            self._refind_state()
            return _error(503, f"A/B state actor unavailable ({type(exc).__name__}); retry shortly")
        if not result["ok"]:
            return _error(result["status"], result["error"])
        await self._refresh()  # this replica applies the change at once; others within ~0.2 s
        return result

    @api.post("/ab/weights")
    async def weights(self, request: Request):
        return await self._admin(request, lambda b: self.state.set_weights.remote(b))

    @api.post("/ab/start")
    async def start(self, request: Request):
        async def call(body):
            if "challenger" not in body:
                raise ValueError("expected {'challenger': version, 'traffic': percent}")
            version = str(body["challenger"])
            try:  # an unknown version: a clear error before any traffic moves
                await self.pool.aload(version)
            except Exception as exc:
                return {
                    "ok": False,
                    "status": 404,
                    "error": f"cannot load {self.spec.model} v{version}: {type(exc).__name__}",
                }
            return await self.state.start.remote(version, body.get("traffic"))

        return await self._admin(request, call)

    @api.post("/ab/expand")
    async def expand(self, request: Request):
        return await self._admin(request, lambda b: self.state.expand.remote("manual"))

    @api.post("/ab/rollback")
    async def rollback(self, request: Request):
        return await self._admin(request, lambda b: self.state.rollback.remote(b.get("reason", "manual")))

    @api.post("/ab/promote")
    async def promote(self, request: Request):
        return await self._admin(request, lambda b: self.state.promote.remote("manual"))

    @api.post("/ab/revert")
    async def revert(self, request: Request):
        """After a promotion: the previous champion serves again, and the registry's alias goes back too."""
        return await self._admin(request, lambda b: self.state.revert.remote(str(b.get("reason", "manual"))))


def build_app(args: dict):
    """Application builder of ``serve run serve/ab.yaml``: see :func:`build`."""
    return build(args)[0]


def build(args: dict):
    """Resolve the versions, start the state actor and return the app with the actor's readiness ref.

    The actor is not waited for: it starts while Serve starts the router replicas, which wait for it
    (``ABRouter.__init__``); :func:`deploy` reads the ref to name the actor's error when a deploy fails.
    """
    from hpm_ray import runtime
    from hpm_ray.registry.aliases import CHAMPION, resolve_version
    from hpm_ray.serving.predlog import default_url
    from hpm_ray.serving.state import ensure_actor, initial_state, kill_actor

    spec = load_spec(ServeSpec, None, args)
    tracking = spec.tracking_uri or runtime.tracking_uri()
    db = spec.state_db or str(runtime.runs_dir() / "ab_state.sqlite")
    log_spec = spec.prediction_log.model_copy(update={"url": spec.prediction_log.url or default_url(db)})
    spec = spec.model_copy(
        update={
            "tracking_uri": tracking,
            "state_db": db,
            "token": spec.token or os.environ.get(TOKEN_ENV),
            "feedback_token": spec.feedback_token or os.environ.get(FEEDBACK_TOKEN_ENV),
            "prediction_log": log_spec,
        }
    )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    refs = {
        slot: resolve_version(spec.model, ref, client) if ref else None
        for slot, ref in (("champion", spec.champion), ("challenger", spec.challenger), ("shadow", spec.shadow))
    }
    init = initial_state(spec.model, refs["champion"], refs["challenger"], refs["shadow"], spec.challenger_traffic)
    if not spec.resume:
        kill_actor(spec.app_name)
    actor = ensure_actor(
        spec.app_name,
        db,
        tracking,
        spec.rollout.model_dump(),
        init,
        spec.resume,
        spec.gates,
        log_spec.url,
        (log_spec.max_age_days, log_spec.max_rows),
        follow_alias=spec.champion == CHAMPION,  # served by alias: a promote or rollback in the registry moves it
    )
    ready = actor.snapshot.remote()
    data = spec.model_dump()
    # a stopping replica hands over what it buffered (``ABRouter.__del__``: up to 5 s for shadows, 10 s for the
    # state actor, then the log write): Serve's default 20 s would cut that short under load
    router = ABRouter.options(
        **spec.scaling("router"), max_ongoing_requests=spec.max_ongoing_requests, graceful_shutdown_timeout_s=60
    )
    if spec.placement == "fast_path":
        return router.bind(data), ready
    variant = Variant.options(**spec.scaling("variant"), max_ongoing_requests=spec.max_ongoing_requests)
    # A challenger deployment always exists (``ab start`` may add one later); a shadow only when configured.
    slots = ("champion", "challenger", "shadow") if refs["shadow"] else ("champion", "challenger")
    handles = {slot: variant.options(name=f"Variant-{slot}").bind(data) for slot in slots}
    return router.bind(data, handles), ready


def start_ab(
    model_name: str,
    champion_version: str = "champion",
    challenger_version: str | None = None,
    weights: dict[str, float] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    feedback_token: str | None = None,
    **spec: object,
) -> str:
    """Serve ``model_name`` (champion, optional challenger at ``weights``) and return the base URL.

    ``spec`` takes any other :class:`ServeSpec` field (``placement``, ``rollout``, ``app_name``, ...).
    """
    from hpm_ray.runtime import init_ray

    init_ray()
    if challenger_version is not None and weights:
        spec["challenger_traffic"] = 100.0 * float(weights.get("challenger", 0)) / float(sum(weights.values()))
    args = {
        "model": model_name,
        "champion": str(champion_version),
        "challenger": None if challenger_version is None else str(challenger_version),
        "token": token,
        "feedback_token": feedback_token,
        **spec,
    }
    serve.start(http_options={"host": host, "port": int(port)})
    app, ready = build(args)
    name = str(args.get("app_name") or "hpm-ab")
    prefix = str(args.get("route_prefix") or "/")
    deploy(app, ready, name, prefix)
    return f"http://{host}:{port}{prefix.rstrip('/')}"


def deploy(app, ready, name: str, prefix: str = "/") -> None:
    """``serve.run`` an app from :func:`build`; ``ready``: its state actor's readiness ref.

    The router replicas wait for that actor: if it cannot start, they fail with it, Serve gives up after its
    retries, and the actor's own error is raised (one line) instead of Serve's, with the app deleted. A deploy
    that started no replica (scale to zero) waits for the actor instead.
    """
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        serve.run(app, name=name, route_prefix=prefix)
        failed = None
    except Exception as exc:
        failed = exc
    try:  # resolved once a router replica started; with no replica yet (scale to zero) this waits for the actor
        ray.get(ready, timeout=10 if failed else None)
    except RayActorError as exc:
        serve.delete(name)  # no app left behind an error (its route prefix stays free)
        raise HPMError(
            f"the A/B state of app {name!r} could not start: {last_line(exc) or type(exc).__name__}"
        ) from None
    except GetTimeoutError:
        pass
    if failed is not None:
        raise failed


def stop(app_name: str = "hpm-ab") -> None:
    """Delete the Serve app and stop its state actor (the state stays in sqlite for the next start)."""
    from hpm_ray.serving.state import kill_actor

    serve.delete(app_name)
    kill_actor(app_name)


def new_token() -> str:
    return secrets.token_urlsafe(24)
