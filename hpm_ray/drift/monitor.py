"""The closed loop: check served traffic against the champion's training reference; on drift, retrain
(HPM distillation, warm-started from the shared optimisation memory), gate, register the new version as
``challenger`` and start a staged A/B on the running app through its admin API.

Every check and every decision is an MLflow run in the ``hpm-ray-drift`` experiment: drift values as
metrics, each decision as a ``decision.<step>`` tag and a line of ``decisions.json``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hpm_ray.config import Spec
from hpm_ray.distill.spec import DistillSpec
from hpm_ray.drift.checks import DEFAULT_FDR, DEFAULT_THRESHOLD, MAX_CATEGORIES, DriftResult, check_drift
from hpm_ray.drift.hysteresis import Hysteresis, WatchLog, last_ab_event, permit
from hpm_ray.drift.pipelines import DISTILL, fit_callable, load_pipeline
from hpm_ray.errors import DataError, HPMError, SpecError

EXPERIMENT = "hpm-ray-drift"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_interval(text: str, allow_zero: bool = False) -> float:
    """``"30s"``, ``"60m"``, ``"2h"``, ``"1d"`` or plain seconds -> seconds (> 0, or >= 0 with ``allow_zero``)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m or (float(m.group(1)) <= 0 and not allow_zero):
        raise SpecError(f"interval must look like 30s, 60m, 2h or 1d ({'>=' if allow_zero else '>'} 0), got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


class CheckSpec(Spec):
    model: str | None = None  # default: the model the app serves (from its served rows)
    alias: str = "champion"
    app: str = "hpm-ab"
    # the app's prediction log (SQLAlchemy URL), where its served rows are; default: the app's default (next to
    # <runs dir>/ab_state.sqlite, or $HPM_RAY_PREDICTION_LOG)
    prediction_log: str | None = None
    window: int = Field(2000, ge=1)
    threshold: float = Field(DEFAULT_THRESHOLD, gt=0)  # PSI a drifted feature must reach
    fdr: float = Field(DEFAULT_FDR, gt=0, lt=1)  # BH level: a no-drift check alarms with at most this probability
    categorical: list[str] = Field(default_factory=list)  # compared by category whatever their type
    max_categories: int = Field(MAX_CATEGORIES, ge=0)  # integer columns with this few values are categories too
    min_rows: int = Field(200, ge=10)
    out: str | None = None  # default: <runs dir>/drift/<app>

    def out_dir(self) -> Path:
        from hpm_ray.runtime import runs_dir

        return Path(self.out) if self.out else runs_dir() / "drift" / self.app

    def open_log(self):
        """The app's :class:`~hpm_ray.serving.predlog.PredictionLog` (close it after use); a URL that is not one,
        or a database that cannot be opened, is a one-line SpecError / DataError."""
        from sqlalchemy.exc import ArgumentError, OperationalError

        from hpm_ray.runtime import runs_dir
        from hpm_ray.serving.predlog import PredictionLog, default_url

        url = self.prediction_log or default_url(runs_dir() / "ab_state.sqlite")
        try:
            return PredictionLog(url)
        except ArgumentError:
            raise SpecError(f"prediction log {url!r} is not a SQLAlchemy URL (e.g. sqlite:///predictions.sqlite)")
        except (OperationalError, OSError) as exc:
            reason = getattr(exc, "orig", None) or exc
            raise DataError(f"prediction log {url!r} cannot be opened: {str(reason)[:200]}") from None


class WatchSpec(CheckSpec):
    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    interval: str = "60m"
    iterations: int | None = Field(None, ge=1)  # None: until stopped
    dry_run: bool = False
    cooldown: str = "6h"  # after a retrain, promote or rollback, no new action for this long
    alarm_k: int = Field(2, ge=1)  # act on the alarm in alarm_k of the last alarm_n checks
    alarm_n: int = Field(3, ge=1)
    data: str | None = None  # reference training table; default: the bundled credit data
    target: str | None = None
    # what the retrain learns from: "served" = labelled served rows of the last label_days (joined through the
    # prediction log) + reference_rows rows of the table; "table" = the table alone (the loop before issue 18)
    source: Literal["served", "table"] = "served"
    label_days: float = Field(30.0, gt=0)
    # labelled served rows a retrain needs; their held-out test_size share becomes the new version's drift
    # reference, so it must reach min_rows (1000 x 0.2 = 200 by default)
    min_labels: int = Field(1000, ge=2)
    reference_rows: int = Field(2000, ge=0)
    traffic: float = Field(10.0, gt=0, lt=100)
    gates: str | None = None  # gates YAML; default: the app's configured gates
    distill: DistillSpec = Field(
        default_factory=lambda: DistillSpec(method="hpm", max_rows=10_000, max_configs=8, teacher_trees=200)
    )
    # what the retrain runs: "distill" (HPM distillation with the settings above) or "module:function", a user
    # callable (X, y) -> fitted classifier, fitted on all rows but a held-out block (drift/pipelines.py).
    # distill.max_rows bounds the rows of a retrain, held-out block included; distill.test_size is that block's share
    pipeline: str = DISTILL

    @model_validator(mode="after")
    def _valid_hysteresis(self) -> WatchSpec:
        self.hysteresis()
        load_pipeline(self.pipeline)  # a typo fails when the spec is read, not after a drift and a retrain
        cap = self.distill.max_rows
        if self.source == "served" and cap is not None and self.reference_rows + self.min_labels > cap:
            raise SpecError(
                f"reference_rows ({self.reference_rows}) + min_labels ({self.min_labels}) exceed the retrain's "
                f"max_rows ({cap}): no room for the served rows it needs"
            )
        held = math.ceil(self.min_labels * self.distill.test_size)
        if self.source == "served" and held < self.min_rows:
            raise SpecError(
                f"min_labels ({self.min_labels}) x test_size ({self.distill.test_size:g}) holds out {held} served "
                f"rows, the retrained version's drift reference; a drift check needs min_rows ({self.min_rows}): "
                f"raise min_labels to {math.ceil(self.min_rows / self.distill.test_size)} or lower min_rows"
            )
        return self

    def hysteresis(self) -> Hysteresis:
        return Hysteresis(parse_interval(self.cooldown, allow_zero=True), self.alarm_k, self.alarm_n)


class DecisionLog:
    """One MLflow run (client API: it never touches the caller's active run)."""

    def __init__(self, run_name: str, tags: dict[str, str]):
        from mlflow.tracking import MlflowClient

        from hpm_ray.runtime import mlflow_experiment, tracking_uri

        experiment = mlflow_experiment(EXPERIMENT)  # first: it points MLflow at the runs folder's store
        self.client = MlflowClient(tracking_uri())
        self.run_id = self.client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
        self.events: list[dict] = []
        self.retrained: float | None = None  # when this check's retrain started: a failure after it still cost it

    def drift(self, result: DriftResult, model: str, version: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = lambda s: re.sub(r"[^0-9A-Za-z_\-. /]", "_", s)
        metrics = [
            Metric("max_psi", result.max_psi, now, 0),
            Metric("drifted", float(result.drifted), now, 0),
            Metric("n_current", float(result.n_current), now, 0),
            Metric("fdr", result.fdr, now, 0),
        ]
        for f in result.checked:
            name = clean(f.feature)
            metrics.append(Metric(f"psi.{name}", f.psi, now, 0))
            metrics.append(Metric(f"missing.{name}", f.missing_current, now, 0))
            if f.ks is not None:
                metrics.append(Metric(f"ks.{name}", f.ks, now, 0))
            if f.q_value is not None:  # Benjamini-Hochberg adjusted across all tests of the window
                metrics.append(Metric(f"q.{name}", f.q_value, now, 0))
        self.client.log_batch(self.run_id, metrics=metrics)
        self.client.set_tag(self.run_id, "hpm_ray.model", model)
        self.client.set_tag(self.run_id, "hpm_ray.version", version)

    def decide(self, step: str, detail: str) -> None:
        self.events.append({"time": time.time(), "step": step, "detail": detail})
        self.client.set_tag(self.run_id, f"decision.{step}", detail[:4000])
        self.client.log_dict(self.run_id, self.events, "decisions.json")

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

    def __enter__(self) -> DecisionLog:  # noqa: PYI034 - not meant to be subclassed
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


@dataclass
class CheckOutcome:
    model: str
    version: str
    result: DriftResult
    json_path: Path
    html_path: Path
    columns: list[str]  # the champion's features (its reference's columns): the schema a retrain must keep


def run_check(spec: CheckSpec, log: DecisionLog | None = None) -> CheckOutcome:
    """Champion reference vs the newest ``window`` served rows; writes drift.json/html; bad input -> DataError."""
    from mlflow.tracking import MlflowClient

    from hpm_ray.drift.report import write_report
    from hpm_ray.registry.aliases import resolve_version
    from hpm_ray.registry.reference import load_reference, prediction_score
    from hpm_ray.runtime import setup_mlflow
    from hpm_ray.serving.served import read_window

    setup_mlflow()
    plog = spec.open_log()
    try:
        window = read_window(plog, spec.app, spec.window)
    finally:
        plog.close()
    model = spec.model or str(window.meta["_model"].iloc[-1])
    client = MlflowClient()
    version = resolve_version(model, spec.alias, client)
    ref = load_reference(model, version, client)
    foreign = [c for c in window.features.columns if c not in ref.features.columns]
    if foreign:
        raise DataError(
            f"the reference of {model} v{version} lacks served column(s) {', '.join(map(repr, foreign[:5]))}: "
            "it is not the reference of the model that served these rows"
        )
    answered = (window.meta["_version"] == str(version)).to_numpy()
    current_pred = prediction_score(window.outputs[answered]) if answered.sum() >= spec.min_rows else None
    result = check_drift(
        ref.features,
        window.features,
        list(ref.features.columns),
        prediction_score(ref.outputs),
        current_pred,
        spec.threshold,
        spec.min_rows,
        fdr=spec.fdr,
        categorical=spec.categorical,
        max_categories=spec.max_categories,
    )
    out = spec.out_dir()
    meta = {
        "model": model,
        "version": version,
        "alias": spec.alias,
        "app": spec.app,
        "window": spec.window,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    json_path, html_path = write_report(result, meta, out)
    if log is not None:
        log.drift(result, model, version)
        for p in (json_path, html_path):
            log.artifact(p)
    return CheckOutcome(model, version, result, json_path, html_path, list(ref.features.columns))


def _gate_overrides(spec: WatchSpec, status: dict) -> tuple[dict | None, str]:
    if spec.gates:
        from hpm_ray.registry.gates import load_gate_file

        return load_gate_file(spec.gates), spec.gates
    return status.get("gates"), "the app's gates" if status.get("gates") else "the default gates"


def _table(spec: WatchSpec):
    """The reference training table: ``--data`` or the bundled credit data."""
    if spec.data:
        from hpm_ray.data.io import prepare_tabular, read_table

        if not spec.target:
            raise SpecError("--data needs --target (the label column)")
        tab = prepare_tabular(read_table(spec.data), spec.target)
        return tab.X, tab.y
    from hpm_ray.data.datasets import load_credit_default

    X, y = load_credit_default()
    return X, y.to_numpy()


def served_training_data(spec: WatchSpec, c: CheckOutcome):
    """Labelled served rows of the last ``label_days`` + ``reference_rows`` of the table, a share of the served rows
    held out (:func:`~hpm_ray.drift.retrain_data.retrain_data`; DataError if unfit)."""
    from hpm_ray.drift.retrain_data import retrain_data
    from hpm_ray.serving.served import labelled_rows

    d = spec.distill
    plog = spec.open_log()
    try:  # a retrain keeps at most max_rows rows: no need to read more served rows than that
        rows = labelled_rows(plog, spec.app, c.model, time.time() - spec.label_days * 86400, d.max_rows)
    finally:
        plog.close()
    return retrain_data(
        rows, c.columns, _table(spec), spec.min_labels, spec.reference_rows, d.max_rows, d.test_size, d.seed
    )


def _retrain(spec: WatchSpec, model: str, out: Path, data) -> str:
    """Run the spec's pipeline on ``data`` (a :class:`~hpm_ray.drift.retrain_data.RetrainData`: the fit rows, and
    the held-out block the gates read and the drift reference) and register the result. The served rows the fit
    used go to its MLflow run as ``served_ids.txt``, the held-out ones as ``held_out_ids.txt``."""
    from mlflow.tracking import MlflowClient

    fn = load_pipeline(spec.pipeline)
    version = _distill(spec, model, out, data) if fn is None else _fit_user_pipeline(fn, spec, model, data)
    client = MlflowClient()
    run_id = client.get_model_version(model, version).run_id
    for name, ids in (("served_ids.txt", data.fit_ids), ("held_out_ids.txt", data.held_out_ids)):
        if ids:
            client.log_text(run_id, "\n".join(ids) + "\n", name)
    return version


def _distill(spec: WatchSpec, model: str, out: Path, data) -> str:
    """HPM distillation (warm-started from the shared memory) whose test split is the held-out block, registered
    by :func:`log_distillation` (gate metrics and drift reference: that block)."""
    import json

    from hpm_ray.distill.auto import AutoDistiller
    from hpm_ray.distill.tracking import log_distillation

    settings = {"method": "hpm", "shared_memory": True, "max_rows": None}  # the rows were chosen: data.X is all
    d = AutoDistiller(
        data.X, data.y, method="hpm", spec=spec.distill.model_copy(update=settings), test_rows=data.held_out_rows
    )
    d.run()
    out.mkdir(parents=True, exist_ok=True)
    d.results_.to_csv(out / "results.csv", index=False)
    (out / "summary.json").write_text(json.dumps(d.summary(), indent=2))
    return log_distillation(d, out, model).rsplit("/", 1)[1]


def _fit_user_pipeline(fn, spec: WatchSpec, model: str, data) -> str:
    """A user callable, fitted without the held-out block whose metrics the gates read (drift/pipelines.py)."""
    import mlflow
    import numpy as np

    from hpm_ray.distill.evaluate import test_metrics
    from hpm_ray.registry.gates import classifier_metrics
    from hpm_ray.registry.models import log_and_register
    from hpm_ray.registry.pyfunc import ClassifierPyfunc
    from hpm_ray.runtime import mlflow_experiment

    X_fit, y_fit = data.fit()
    X_test, y_test = data.held_out()
    est = fit_callable(fn, X_fit, y_fit)
    classes = list(est.classes_)
    proba = np.asarray(est.predict_proba(X_test), dtype=float)
    metrics = classifier_metrics(y_test, proba, classes)
    codes = np.searchsorted(np.asarray(classes), y_test)
    metrics.update({k: v for k, v in test_metrics(codes, proba).items() if k not in metrics and np.isfinite(v)})
    with mlflow.start_run(experiment_id=mlflow_experiment(EXPERIMENT), run_name="retrain-pipeline"):
        mlflow.log_params({"pipeline": spec.pipeline, "rows_fit": len(X_fit), "rows_test": len(X_test)})
        mv = log_and_register(
            ClassifierPyfunc(est, X_fit, classes),
            model,
            kind="classifier",
            metrics=metrics,
            input_example=X_fit,
            tags={"hpm_ray.pipeline": spec.pipeline},
            reference=X_test,
        )
    return str(mv.version)


def watch_once(spec: WatchSpec, say: Callable[[str], None] = print) -> dict:
    """One iteration; returns ``{"action": none|waiting|skipped|dry_run|refused|ab_started, ...}``.

    Each iteration is one line of the watch's JSON log (``<out>/watch.jsonl``): verdict, action and the reason,
    also when nothing is done; the log is the memory of the cooldown and of the k-of-n rule.
    """
    journal = WatchLog(spec.out_dir() / "watch.jsonl")
    with DecisionLog("drift-watch", {"hpm_ray.app": spec.app, "hpm_ray.dry_run": str(spec.dry_run)}) as log:
        c = None
        try:
            try:
                c = run_check(spec, log)
            except HPMError as exc:
                log.decide("check", f"no check, no retrain: {exc}")
                raise
            result = _act(spec, c, log, say, journal)
        except Exception as exc:
            log.decide("error", str(exc) if isinstance(exc, HPMError) else f"{type(exc).__name__}: {exc}")
            entry = {"action": "error", "reason": log.events[-1]["detail"], "run_id": log.run_id}
            if c is not None:  # the check itself completed (say, the retrain was refused): its alarm still counts
                entry.update(drifted=c.result.drifted, model=c.model, version=c.version)
            if log.retrained is not None:  # a retrain started: the cooldown counts from this entry, as from an action
                entry["retrained"] = log.retrained
            journal.append(entry)
            raise
        journal.append(
            {
                "drifted": result["drifted"],
                "action": result["action"],
                "reason": log.events[-1]["detail"],
                "model": result["model"],
                "version": result["version"],
                "run_id": log.run_id,
            }
        )
        return result


def _act(spec: WatchSpec, c: CheckOutcome, log: DecisionLog, say: Callable[[str], None], journal: WatchLog) -> dict:
    """What one drift verdict leads to; every branch leaves its decision in ``log``."""
    from hpm_ray.drift.report import verdict
    from hpm_ray.registry.aliases import check_gates, set_alias
    from hpm_ray.serving.client import call

    say(f"{c.model} v{c.version}: {verdict(c.result)} (report {c.html_path})")
    log.decide("check", verdict(c.result))
    base = {
        "model": c.model,
        "version": c.version,
        "drifted": c.result.drifted,
        "max_psi": c.result.max_psi,
        "report": str(c.html_path),
        "run_id": log.run_id,
    }
    if not c.result.drifted:
        log.decide("retrain", "not started: no drift")
        return {**base, "action": "none"}
    status = call(spec.url, "GET", "/ab/status", token=spec.token)  # the full view: history, gates
    if "history" not in status:  # the public view: no cooldown to read, no gates, and /ab/start would be refused
        raise HPMError(
            f"the app at {spec.url} showed its public status only: drift watch needs the admin token "
            "(--token or $HPM_RAY_SERVE_TOKEN) to read the A/B history and gates and to start an A/B"
        )
    if status["model"] != c.model:
        raise HPMError(f"the app at {spec.url} serves {status['model']!r}, not {c.model!r}")
    running = status["variants"].get("challenger")
    if running and status.get("stage") in ("rollout", "manual"):
        log.decide("retrain", f"not started: challenger v{running} is already in an A/B ({status['stage']})")
        return {**base, "action": "skipped"}
    last = max((t for t in (journal.last_action(), last_ab_event(status)) if t is not None), default=None)
    allowed = permit(journal.verdicts(c.version, after=last) + [True], last, time.time(), spec.hysteresis())
    if not allowed.act:
        log.decide("retrain", f"not started: {allowed.reason}")
        say(f"drift, but no action: {allowed.reason}")
        return {**base, "action": "waiting"}
    log.decide("hysteresis", allowed.reason)
    gates, gates_from = _gate_overrides(spec, status)
    table = spec.data or "the bundled credit data"
    source = (
        f"labelled served rows of the last {spec.label_days:g} days + {spec.reference_rows} rows of {table}"
        if spec.source == "served"
        else table
    )
    if spec.dry_run:
        how = (
            f"HPM distillation on {source}, max_rows={spec.distill.max_rows}, warm-started from the shared "
            "optimisation memory"
            if spec.pipeline == DISTILL
            else f"{spec.pipeline} on {source}, a held-out block kept for the gates"
        )
        plan = (
            f"would retrain ({how}), gate with {gates_from}, register {c.model} as 'challenger' and start "
            f"an A/B at {spec.traffic:g}% on {spec.url}"
        )
        log.decide("dry_run", plan)
        say(f"dry run: {plan}")
        return {**base, "action": "dry_run", "plan": plan}
    try:
        if spec.source == "served":
            data = served_training_data(spec, c)
        else:
            from hpm_ray.drift.retrain_data import table_data

            d = spec.distill
            data = table_data(*_table(spec), c.columns, d.max_rows, d.test_size, d.seed)
    except HPMError as exc:
        log.decide("retrain", f"not started: {exc}")
        raise
    held = len(data.X) - data.n_fit
    source = (
        f"{len(data.fit_ids)} labelled served rows + {data.n_reference} rows of {table}; {held} served rows "
        "held out for the gates and the drift reference"
        if spec.source == "served"
        else f"{data.n_fit} rows of {table}; {held} held out for the gates and the drift reference"
    )
    log.decide("retrain", f"started on {source}")
    say(f"drift: retraining on {source} ...")
    t0 = log.retrained = time.time()
    out = (Path(spec.out) if spec.out else Path(c.json_path).parent) / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    version = _retrain(spec, c.model, out, data)
    log.decide("register", f"{c.model} v{version} registered after {time.time() - t0:.0f} s")
    g = check_gates(c.model, version, gates)
    log.decide("gates", f"{'passed' if g.passed else 'refused'} ({gates_from}): {g.summary()}")
    if not g.passed:
        log.decide("ab", "not started: the retrained model failed its gates")
        say(f"v{version} refused by the gates: {g.summary()}; no A/B")
        return {**base, "action": "refused", "challenger": version, "gates": g.summary()}
    set_alias(c.model, "challenger", version)
    started = call(spec.url, "POST", "/ab/start", {"challenger": version, "traffic": spec.traffic}, spec.token)
    log.decide("ab", f"started: {started['detail']}")
    say(f"v{version} passed the gates; alias 'challenger'; A/B {started['detail']}")
    return {**base, "action": "ab_started", "challenger": version}


def watch(
    spec: WatchSpec, say: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep
) -> list[dict]:
    """Run :func:`watch_once` every ``interval``; a check refused for bad input is reported and retried next time."""
    interval = parse_interval(spec.interval)
    if spec.gates:  # a bad gates file fails now, not after a drift check and a retrain
        from hpm_ray.registry.gates import load_gate_file

        load_gate_file(spec.gates)
    if spec.data:  # so does a --data without its --target column, which the first retrain reads hours later
        _table(spec)
    results: list[dict] = []
    n = 0
    while True:
        try:
            results.append(watch_once(spec, say))
        except HPMError as exc:
            if spec.iterations == 1:
                raise
            say(f"check skipped: {exc}")
            results.append({"action": "error", "error": str(exc)})
        n += 1
        if spec.iterations is not None and n >= spec.iterations:
            return results
        sleep(interval)
