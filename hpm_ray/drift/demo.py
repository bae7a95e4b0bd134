"""``hpm-ray drift demo``: the whole drift loop on a real shift of the bundled credit data, and a control.

The champion (LightGBM) is trained on credit rows as they were. Then served traffic changes: clients aged 30 or
less become most of it (a covariate shift the drift check can see, on ``AGE``), and their default rate rises (half
of their non-defaulters default: the relation between features and default changes, which the champion cannot
know). Labels arrive late through ``POST /feedback``: the first drifted check finds none and refuses to retrain
(the watch keeps running); once they are in, the watch retrains on the labelled window plus rows of the champion's
training data, the gates pass, the A/B starts at 10 %, and labelled A/B traffic goes on until the rollout's
anytime-valid test decides. Each served row is drawn once from credit rows neither model was fitted on, so the A/B
judges both on rows new to them. The control run serves as many unshifted rows first: the watch must take no action
(they stay unlabelled, so the shifted run's retrain learns from shifted rows only). Both log losses come from the
A/B's own per-version scores on the shifted traffic, with the test's confidence sequence for their difference.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hpm_ray.errors import HPMError

MODEL = "hpm-drift-demo"
APP = "hpm-drift-demo"
YOUNG = 30  # the subpopulation: clients aged this or less
TARGET = "default"  # the label column of the retrain's reference table
# credit-scoring gates the champion and the retrained challenger must pass (the distilled student is trained on
# a few thousand rows, so these are looser than serve/gates_credit.yaml). Accuracy and mean confidence at the 0.5
# cut follow the base rate, which the shift moves (a retrain on shifted rows scored 0.63 accuracy with a far
# lower log loss): the demo gates on ranking (AUC) and macro F1 instead. The retrained model's gates read its
# held-out block of shifted served rows, where the relation is noisier (a share of the young non-defaulters
# default at random): there a retrained LightGBM ranks at AUC 0.69-0.72 and the old champion at 0.57-0.63 (5 seeds,
# 5,000 shifted rows each), and 120 held-out rows (--quick) measure it to about +-0.05, hence 0.6.
GATES = {
    "classifier": {
        "accuracy": {"low": 0.0},
        "f1": {"low": 0.3},
        "precision_*": {"low": 0.0},
        "recall_*": {"low": 0.0},
        "mean_confidence": {"low": 0.5},
        "auc": {"low": 0.6},
    }
}


#: How an A/B ends (its ``/ab/status`` history event) -> the demo's action.
ENDS = {"promote": "promoted", "rollback": "rolled_back", "inconclusive": "inconclusive"}


def ab_end(status: dict, since: float) -> dict | None:
    """The history entry that ended the A/B started at ``since`` (None while it runs)."""
    ends = [h for h in status.get("history", []) if h["time"] >= since and h["event"] in ENDS]
    return ends[-1] if ends else None


@dataclass(frozen=True)
class DriftDemoPlan:
    champion_rows: int = 4000  # the champion's training rows (the next as many: its held-out reference)
    detect_rows: int = 2000  # served rows the watch checks (the drift window), labelled late
    # at most this many A/B requests (stops once the rollout decides); drawn from the rows not served before, 70 %
    # of them young: about 5,900 young rows are left after the drift windows, so at most ~840 requests of 10
    ab_requests: int = 800
    rows_per_request: int = 10
    young_share: float = 0.7  # of shifted traffic
    flip: float = 0.5  # share of the subpopulation's non-defaulters who default under the shift
    trials: int = 4  # HPM trials per distillation config of the retrain
    configs: int = 2
    teacher_trees: int = 100
    teacher_folds: int = 5  # out-of-fold teacher fits per teacher
    teacher_tune_trials: int = 30  # the teacher's LightGBM member tuned on validation
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0)  # distillation temperatures the retrain screens
    reference_rows: int = 2000  # reference rows mixed into the retrain
    min_samples: int = 20  # labelled requests per variant before the test may decide
    optimise_for: int = 3000  # labelled rows at which the test's confidence sequence is tightest


QUICK = DriftDemoPlan(  # a stronger shift, so that fewer labels decide (the test's size)
    champion_rows=2000,
    detect_rows=600,
    ab_requests=500,  # 8,000 young rows of the ~8,800 left
    rows_per_request=20,
    young_share=0.8,
    flip=0.7,
    trials=1,
    configs=1,
    teacher_trees=30,
    teacher_folds=2,
    teacher_tune_trials=4,
    temperatures=(1.0,),
    reference_rows=1000,
)


def draw(X: pd.DataFrame, pool: np.ndarray, n: int, young_share: float | None, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of ``pool`` without replacement (a share ``young_share`` of them aged <= YOUNG; None: as they
    come) and the rest of the pool. No row is served twice, so no A/B row, nor any held-out row the gates read,
    is a row the retrain fitted on."""
    if young_share is None:
        parts = [(pool, n, "")]
    else:
        young = X["AGE"].to_numpy()[pool] <= YOUNG
        k = round(young_share * n)
        parts = [(pool[young], k, f" aged <= {YOUNG}"), (pool[~young], n - k, f" aged > {YOUNG}")]
    for part, m, who in parts:
        if m > len(part):
            raise HPMError(f"the demo's pool has {len(part)} unserved rows{who} left, the traffic needs {m}")
    rows = np.concatenate([rng.choice(part, m, replace=False) for part, m, _ in parts])
    return rows[rng.permutation(n)], np.setdiff1d(pool, rows)


def traffic(X: pd.DataFrame, y: np.ndarray, pool: np.ndarray, n: int, plan: DriftDemoPlan, shift: bool, rng):
    """``n`` served rows drawn from ``pool`` (:func:`draw`), their labels and the rest of the pool: as they were,
    or shifted (young clients over-represented, and a share ``flip`` of their non-defaulters defaulting)."""
    rows, rest = draw(X, pool, n, plan.young_share if shift else None, rng)
    labels = y[rows].copy()
    if shift:
        labels[(X["AGE"].to_numpy()[rows] <= YOUNG) & (labels == 0) & (rng.random(n) < plan.flip)] = 1
    return X.iloc[rows].reset_index(drop=True), labels, rest


class _Client:
    """The served clients and the late labeller, over HTTP."""

    def __init__(self, url: str, token: str, feedback_token: str, rows_per_request: int):
        import requests

        self.url, self.rows = url, rows_per_request
        self.session = requests.Session()
        self.auth = {"Authorization": f"Bearer {feedback_token}"}
        self.admin = {"Authorization": f"Bearer {token}"}

    def predict(self, X: pd.DataFrame) -> list[tuple[str, int, int]]:
        """(request id, first row, rows) of each request."""
        sent = []
        for i in range(0, len(X), self.rows):
            part = X.iloc[i : i + self.rows]
            body = {"dataframe_split": {"columns": list(part.columns), "data": part.to_numpy().tolist()}}
            r = self.session.post(f"{self.url}/predict", json=body, timeout=60)
            if r.status_code != 200:
                raise HPMError(f"/predict answered {r.status_code}: {r.text[:200]}")
            sent.append((r.json()["request_id"], i, len(part)))
        return sent

    def feedback(self, sent: list[tuple[str, int, int]], y: np.ndarray) -> int:
        body = [{"request_id": rid, "labels": [int(v) for v in y[i : i + n]]} for rid, i, n in sent]
        r = self.session.post(f"{self.url}/feedback", json=body, headers=self.auth, timeout=60)
        if r.status_code != 200:
            raise HPMError(f"/feedback answered {r.status_code}: {r.text[:200]}")
        return int(r.json()["joined"])

    def status(self) -> dict:
        return self.session.get(f"{self.url}/ab/status", headers=self.admin, timeout=60).json()


def _champion(X: pd.DataFrame, y: np.ndarray, train: np.ndarray, held: np.ndarray) -> str:
    import lightgbm as lgb
    import mlflow

    from hpm_ray.metrics import roc_auc
    from hpm_ray.registry.aliases import promote
    from hpm_ray.registry.gates import classifier_metrics
    from hpm_ray.registry.models import log_and_register
    from hpm_ray.registry.pyfunc import ClassifierPyfunc
    from hpm_ray.runtime import mlflow_experiment

    m = lgb.LGBMClassifier(n_estimators=60, verbose=-1).fit(X.iloc[train], y[train])
    proba = m.predict_proba(X.iloc[held])
    metrics = {**classifier_metrics(y[held], proba, m.classes_), "auc": roc_auc(y[held], proba[:, 1])}
    with mlflow.start_run(experiment_id=mlflow_experiment("hpm-ray-drift-demo"), run_name="champion"):
        version = str(
            log_and_register(
                ClassifierPyfunc(m, X.iloc[train]),
                MODEL,
                "classifier",
                metrics,
                input_example=X.iloc[train[:3]],
                reference=X.iloc[held],
            ).version
        )
    promote(MODEL, version, GATES)
    return version


def _reference_table(X: pd.DataFrame, y: np.ndarray, rows: np.ndarray, path: Path) -> Path:
    """The champion's training rows, the retrain's reference table (the watch's ``--data``): never served."""
    path.parent.mkdir(parents=True, exist_ok=True)
    X.iloc[rows].assign(**{TARGET: y[rows]}).to_parquet(path)
    return path


def _watch_spec(plan: DriftDemoPlan, url: str, token: str, out: Path, state_db: Path, reference: Path):
    from hpm_ray.distill.spec import DistillSpec
    from hpm_ray.drift.monitor import WatchSpec
    from hpm_ray.serving.predlog import default_url

    return WatchSpec(
        app=APP,
        window=plan.detect_rows,
        url=url,
        token=token,
        interval="1s",
        alarm_k=1,
        alarm_n=1,
        out=str(out),
        prediction_log=default_url(state_db),
        data=str(reference),
        target=TARGET,
        min_labels=min(200, plan.detect_rows // 2),
        min_rows=math.ceil(min(200, plan.detect_rows // 2) * 0.2),  # 20 % of min_labels: the new version's reference
        reference_rows=plan.reference_rows,
        distill=DistillSpec(
            method="hpm",
            max_rows=plan.detect_rows * 2 + plan.reference_rows,
            max_configs=plan.configs,
            hpm_trials=plan.trials,
            teacher_trees=plan.teacher_trees,
            teacher_folds=plan.teacher_folds,
            teacher_tune_trials=plan.teacher_tune_trials,
            temperatures=list(plan.temperatures),
            students=["lgbm"],
        ),
    )


def run_drift_demo(
    out: Path,
    plan: DriftDemoPlan = DriftDemoPlan(),
    port: int = 8000,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> dict:
    """Control run, then the shifted run; returns ``{"shift": {...}, "control": {...}}`` (also ``out/demo.json``).

    Examples
    --------
    >>> run_drift_demo(Path("/tmp/drift-demo"), QUICK)["shift"]["action"]  # doctest: +SKIP
    'promoted'
    """
    from hpm_ray import serving
    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.drift.monitor import watch_once
    from hpm_ray.serving.app import new_token
    from hpm_ray.serving.cli import format_status
    from hpm_ray.serving.served import row_id

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    X, y_frame = load_credit_default()
    y = y_frame.to_numpy()
    order = rng.permutation(len(X))
    train, held = order[: plan.champion_rows], order[plan.champion_rows : 2 * plan.champion_rows]
    pool = order[2 * plan.champion_rows :]  # served traffic: drift windows, then A/B, each row served once
    say(f"[1/5] champion: LightGBM on {plan.champion_rows:,} credit rows (reference: {len(held):,} held-out rows)")
    champion = _champion(X, y, train, held)
    reference = _reference_table(X, y, train, out / "reference.parquet")
    token, fb_token = new_token(), new_token()
    state_db = out / "ab_state.sqlite"
    policy = {
        "auto": True,
        "steps": [10.0, 100.0],
        "min_duration_s": 0.0,
        "min_samples": plan.min_samples,
        "test": {"optimise_for": plan.optimise_for},
    }
    url = serving.start_ab(
        MODEL,
        "champion",
        port=port,
        token=token,
        feedback_token=fb_token,
        app_name=APP,
        route_prefix=f"/{APP}",  # beside other apps on the same Serve proxy
        resume=False,
        rollout=policy,
        gates=GATES,
        state_db=str(state_db),
    )
    client = _Client(url, token, fb_token, plan.rows_per_request)
    try:
        say(f"[2/5] control: {plan.detect_rows:,} unshifted rows served; drift watch")
        Xc, _, pool = traffic(X, y, pool, plan.detect_rows, plan, False, rng)
        client.predict(Xc)  # their labels are not needed: the watch must not act on this window
        time.sleep(0.6)  # the router writes served rows every ~0.2 s
        control = watch_once(
            _watch_spec(plan, url, token, out / "control", state_db, reference), lambda m: say("      " + m)
        )
        say(f"      control: action {control['action']}")

        say(f"[3/5] shift: {plan.detect_rows:,} rows, {plan.young_share:.0%} aged <= {YOUNG}, whose default rate rises")
        spec = _watch_spec(plan, url, token, out / "shift", state_db, reference)
        Xs, ys, pool = traffic(X, y, pool, plan.detect_rows, plan, True, rng)
        sent = client.predict(Xs)
        time.sleep(0.6)
        try:  # the labels have not arrived: the watch says so and would keep running
            early = watch_once(spec, lambda m: say("      " + m))
        except HPMError as exc:
            early = {"action": "error", "error": str(exc)}
            say(f"      before the labels: {exc}")
        client.feedback(sent, ys)
        say(f"      {len(ys):,} late labels posted; drift watch again")
        shifted = watch_once(spec, lambda m: say("      " + m))
        if shifted["action"] != "ab_started":
            raise HPMError(f"the watch did not start an A/B on the shifted traffic: {shifted}")

        say("[4/5] A/B at 10 %: shifted traffic, each request labelled, until the sequential test decides")
        t_ab, last, event, n = time.time() - 1, None, None, 0
        Xa, ya, _ = traffic(X, y, pool, plan.ab_requests * plan.rows_per_request, plan, True, rng)

        def look() -> dict | None:
            nonlocal last
            s = client.status()
            last = s if s.get("test") else last
            return ab_end(s, t_ab)

        while n < plan.ab_requests and event is None:
            part = slice(n * plan.rows_per_request, (n + 20) * plan.rows_per_request)
            client.feedback(client.predict(Xa.iloc[part]), ya[part])
            n += 20
            event = look()
        deadline = time.time() + 10  # the state actor reads joined labels every second
        while event is None and time.time() < deadline:
            time.sleep(0.5)
            event = look()
        final = client.status()
        action = "none" if event is None else ENDS[event["event"]]
        metrics = (last or final).get("metrics", {})
        test = (last or final).get("test") or {}
        say(f"[5/5] {action} after {n} A/B requests; the test when it decided:")
        say(format_status(last or final))
        if event is not None:
            say(f"      {event['event']}: {event['detail']}")
        result = {
            "shift": {
                "action": action,
                "old_log_loss": metrics.get("champion", {}).get("mean_score"),
                "new_log_loss": metrics.get("challenger", {}).get("mean_score"),
                "old_version": champion,
                "new_version": shifted["challenger"],
                "difference": test.get("estimate"),
                "interval": [test.get("lower"), test.get("upper")] if test else None,
                "labelled_records": test.get("n"),
                "ab_requests": n,
                "before_labels": early.get("error") or early["action"],
                # the served rows the demo's client labelled before the retrain: what it can learn from
                "labelled_rows": [row_id(rid, r) for rid, _, k in sent for r in range(k)],
                "watch_run_id": shifted["run_id"],
            },
            "control": {"action": control["action"], "max_psi": control["max_psi"]},
            "plan": asdict(plan),
            "wall_time_s": round(time.time() - t0, 1),
        }
        (out / "demo.json").write_text(json.dumps(result, indent=2, default=str))
        return result
    finally:
        serving.stop(APP)
