"""``hpm-ray demo``: the main job on the bundled data, end to end (README command 1).

A small conformal HPO on the BTC series and a small distillation on the credit data, both registered in
MLflow; quality gates decide what may become ``champion``; the hard-label model (champion) and the
distilled student (challenger) are served at 90/10 through the A/B router; a few hundred held-out rows are
sent over HTTP with label feedback; per-variant live stats are printed. Sizes live in :class:`DemoPlan`
so the test suite runs the same code on less data.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

MODEL_NAME = "credit-default-student"
CREDIT_GATES = Path(__file__).resolve().parent / "registry" / "gates_credit.yaml"


@dataclass(frozen=True)
class DemoPlan:
    """How much work each stage does (defaults: a few minutes on 2 cores)."""

    hpo_horizons: tuple[int, ...] = (42, 60)
    hpo_trials: int = 6
    hpo_rows: int = 12_000  # most recent BTC bars
    hpo_rounds: int = 200
    distill_rows: int = 8_000
    distill_trials: int = 2
    distill_configs: int = 6
    teacher_trees: int = 200
    teacher_tune_trials: int = 30  # the teacher's LightGBM member tuned on validation
    requests: int = 400
    clients: int = 8


def register(sub: argparse._SubParsersAction) -> None:
    from hpm_ray.cli_args import add_runtime_args, port_number

    p = sub.add_parser("demo", help="HPO + distillation on bundled data, gates, then a live 90/10 A/B over HTTP")
    p.add_argument("--out", help="output folder (default <runs dir>/demo)")
    p.add_argument(
        "--port", type=port_number, default=8000, help="HTTP port of the A/B app on 127.0.0.1 (default 8000)"
    )
    p.add_argument("--keep-serving", action="store_true", help="leave the A/B app up until Ctrl-C")
    p.add_argument("--seed", type=int, default=0)
    add_runtime_args(p)
    p.set_defaults(func=demo_cmd)


def demo_cmd(args: argparse.Namespace) -> int:
    from hpm_ray.runtime import require_free_port, runs_dir

    require_free_port("127.0.0.1", args.port, args.address)  # before minutes of HPO and distillation, not after
    out = Path(args.out) if args.out else runs_dir() / "demo"
    run_demo(
        out,
        DemoPlan(),
        port=args.port,
        seed=args.seed,
        address=args.address,
        num_cpus=args.num_cpus,
        keep_serving=args.keep_serving,
        verbose=args.verbose,
    )
    return 0


def _say(msg: str) -> None:
    print(msg, flush=True)


def _hpo(out: Path, plan: DemoPlan, seed: int, runtime: dict) -> dict:
    from hpm_ray.hpo.runner import run_hpo
    from hpm_ray.hpo.spec import HPOSpec

    spec = HPOSpec(
        horizons=list(plan.hpo_horizons),
        trials_per_horizon=plan.hpo_trials,
        max_rows=plan.hpo_rows,
        max_rounds=plan.hpo_rounds,
        seed=seed,
        runtime=runtime,
    )
    return run_hpo(spec, out / "hpo")


def _distill(out: Path, plan: DemoPlan, seed: int, runtime: dict):
    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.distill.auto import AutoDistiller
    from hpm_ray.distill.spec import DistillSpec

    X, y = load_credit_default()
    spec = DistillSpec(
        method="hpm",
        max_rows=plan.distill_rows,
        hpm_trials=plan.distill_trials,
        max_configs=plan.distill_configs,
        teacher_trees=plan.teacher_trees,
        teacher_folds=3,
        teacher_tune_trials=plan.teacher_tune_trials,
        seed=seed,
        runtime=runtime,
    )
    d = AutoDistiller(X, y, method="hpm", spec=spec)
    d.run()
    (out / "distill").mkdir(parents=True, exist_ok=True)
    d.results_.to_csv(out / "distill" / "results.csv", index=False)
    (out / "distill" / "summary.json").write_text(json.dumps(d.summary(), indent=2))
    d.generate_report(out / "distill" / "report.html")
    return d


def _register_twin(d) -> str:
    """Register the best student's hard-label twin (same type and size, hard labels): today's production model."""
    import mlflow

    from hpm_ray.distill.catalog import make_student
    from hpm_ray.metrics import ks_statistic, roc_auc
    from hpm_ray.registry.gates import classifier_metrics
    from hpm_ray.registry.models import log_and_register
    from hpm_ray.registry.pyfunc import ClassifierPyfunc
    from hpm_ray.runtime import mlflow_experiment

    best = d.summary()["best"]
    sp = d.splits
    twin = make_student(best["student"], best["params"], seed=d.spec.seed).fit(sp.X_train, sp.y_train)
    proba = twin.predict_proba(sp.X_test)
    metrics = classifier_metrics(sp.classes[sp.y_test], proba, list(sp.classes))
    metrics.update(auc=roc_auc(sp.y_test, proba[:, 1]), ks=ks_statistic(sp.y_test, proba[:, 1]))
    with mlflow.start_run(experiment_id=mlflow_experiment("hpm-ray-demo"), run_name="hard-label-baseline"):
        mlflow.log_params({"student": best["student"], "labels": "hard"})
        mlflow.log_metrics(metrics)
        mv = log_and_register(
            ClassifierPyfunc(twin, sp.X_train, list(sp.classes)),
            MODEL_NAME,
            kind="classifier",
            metrics=metrics,
            input_example=sp.X_train,
            tags={"hpm_ray.student": best["student"], "hpm_ray.labels": "hard"},
        )
    return str(mv.version)


def _gates(name: str, version: str, gates_file: Path) -> tuple[str, dict]:
    """Try the seed's default gates, then the credit-scoring gates of ``gates_file``; returns the outcome."""
    from hpm_ray.registry.aliases import check_gates
    from hpm_ray.registry.gates import load_gate_file

    default = check_gates(name, version)
    overrides = load_gate_file(gates_file)
    credit = check_gates(name, version, overrides)
    return ("default" if default.passed else "credit" if credit.passed else "none"), {
        "default": default.summary(),
        "credit": credit.summary(),
        "overrides": overrides,
    }


def _traffic(url: str, d, plan: DemoPlan, seed: int, feedback_token: str, token: str) -> dict:
    """Held-out test rows, one per request, each followed by its true label as feedback."""
    import numpy as np
    import requests

    sp = d.splits
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(sp.X_test), size=min(plan.requests, len(sp.X_test)), replace=False)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=plan.clients))

    def one(i: int) -> tuple[str, bool]:
        row = sp.X_test.iloc[[i]]
        payload = {"dataframe_split": {"columns": list(row.columns), "data": row.to_numpy().tolist()}}
        r = session.post(f"{url}/predict", json=payload, timeout=30)
        if r.status_code != 200:
            return "error", False
        body = r.json()
        label = sp.classes[sp.y_test[i]].item()
        fb = session.post(
            f"{url}/feedback",
            json={"request_id": body["request_id"], "label": label},
            headers={"Authorization": f"Bearer {feedback_token}"},
            timeout=30,
        )
        return body["variant"], fb.status_code == 200

    with ThreadPoolExecutor(plan.clients) as pool:
        results = list(pool.map(one, rows))
    served = {}
    for variant, _ in results:
        served[variant] = served.get(variant, 0) + 1
    joined = sum(ok for _, ok in results)
    deadline = time.time() + 15  # the state actor reads joined labels from the prediction log every second
    while True:
        status = session.get(f"{url}/ab/status", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        if sum(m["labelled"] for m in status["metrics"].values()) >= joined or time.time() > deadline:
            return {"served": served, "status": status}
        time.sleep(0.3)


def run_demo(
    out: Path,
    plan: DemoPlan,
    port: int = 8000,
    seed: int = 0,
    address: str | None = None,
    num_cpus: int | None = None,
    keep_serving: bool = False,
    verbose: bool = False,
    gates_file: Path = CREDIT_GATES,
    log=_say,
) -> dict:
    """Run every stage; returns (and writes to ``out/demo.json``) what a person would check."""
    from hpm_ray import serving
    from hpm_ray.errors import HPMError
    from hpm_ray.registry.aliases import promote, set_alias
    from hpm_ray.runtime import init_ray, tracking_uri
    from hpm_ray.serving.app import new_token
    from hpm_ray.serving.cli import format_status

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    runtime = {"address": address, "num_cpus": num_cpus, "verbose": verbose}
    init_ray(address, num_cpus, verbose)

    log(
        f"[1/4] conformal quantile HPO on the last {plan.hpo_rows:,} BTC bars, horizons "
        f"{','.join(map(str, plan.hpo_horizons))}, {plan.hpo_trials} trials each"
    )
    hpo = _hpo(out, plan, seed, runtime)
    for h, e in hpo["horizons"].items():
        log(
            f"      h={h}: test pinball {e['test_pinball']:.5f} (naive {e['baselines']['naive']['test_pinball']:.5f}), "
            f"90% coverage {e['coverage_90']:.3f} ({e['interval_method']}; split CQR {e['coverage_90_cqr']:.3f}), {e['n_pruned']}/{e['n_trials']} pruned, {e['model_uri']}"
        )

    log(f"[2/4] HPM-KD distillation on {plan.distill_rows:,} credit rows")
    d = _distill(out, plan, seed, runtime)
    s = d.summary()
    log(
        f"      teacher AUC {s['teacher']['auc']:.4f}; student {s['best']['student']} AUC {s['best']['auc']:.4f}; "
        f"hard-label twin AUC {s['hard_label_twin']['auc']:.4f}"
    )

    log(f"[3/4] registry: hard-label model = champion candidate, distilled student = challenger ({MODEL_NAME})")
    from hpm_ray.distill.tracking import log_distillation

    champion_v = _register_twin(d)
    student_uri = log_distillation(d, out / "distill", MODEL_NAME)
    challenger_v = student_uri.rsplit("/", 1)[1]
    which, gates = _gates(MODEL_NAME, champion_v, gates_file)
    log(f"      seed default gates on v{champion_v}: {gates['default']}")
    if which == "none":
        raise HPMError(
            f"{MODEL_NAME} v{champion_v} refused by the default and the {gates_file.name} gates: {gates['credit']}"
        )
    promote(MODEL_NAME, champion_v, gates["overrides"] if which == "credit" else None)
    set_alias(MODEL_NAME, "challenger", challenger_v)
    log(f"      v{champion_v} promoted to champion under the {which} gates; v{challenger_v} is the challenger")

    log(f"[4/4] A/B on Ray Serve at 90/10, {plan.requests} requests with label feedback")
    token, feedback_token = new_token(), new_token()
    url = serving.start_ab(
        MODEL_NAME,
        "champion",
        "challenger",
        {"champion": 90, "challenger": 10},
        port=port,
        token=token,
        feedback_token=feedback_token,
        resume=False,
        rollout={"auto": False},
        app_name="hpm-demo",
    )
    try:
        traffic = _traffic(url, d, plan, seed, feedback_token, token)
        log(format_status(traffic["status"]))
        summary = {
            "wall_time_s": round(time.time() - t0, 1),
            "plan": asdict(plan),
            "served": traffic["served"],
            "ab_status": traffic["status"],
            "gates": gates,
            "champion_version": champion_v,
            "challenger_version": challenger_v,
            "hpo": hpo["horizons"],
            "distill": s,
            "reports": {"hpo": str(out / "hpo" / "report.html"), "distill": str(out / "distill" / "report.html")},
            "mlflow": tracking_uri(),
        }
        (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
        log(f"reports: {summary['reports']['hpo']}\n         {summary['reports']['distill']}")
        log(f"MLflow UI: mlflow ui --backend-store-uri {summary['mlflow']}")
        log(f"done in {summary['wall_time_s']:.0f} s; summary in {out / 'demo.json'}")
        if keep_serving:
            log(f"serving at {url} (admin token: {token}, feedback token: {feedback_token}); Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return summary
    finally:
        serving.stop("hpm-demo")
