"""``hpm-ray drift check`` (one drift report) and ``hpm-ray drift watch`` (check on a schedule; when the alarm
holds in K of the last N checks and no cooldown runs, retrain, gate, register a challenger and start an A/B)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hpm_ray.errors import SpecError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="registered model name (default: the one the app serves)")
    p.add_argument(
        "--alias", default="champion", help="version alias whose reference is the baseline (default champion)"
    )
    p.add_argument("--app", default="hpm-ab", help="A/B app name whose served rows are checked (default hpm-ab)")
    p.add_argument(
        "--prediction-log",
        help="SQLAlchemy URL of the app's prediction log, which holds its served rows and labels "
        "(default: the app's default, $HPM_RAY_PREDICTION_LOG or predictions.sqlite in the runs folder)",
    )
    p.add_argument("--window", type=int, default=2000, help="newest served rows to check (default 2000)")
    p.add_argument("--min-rows", type=int, default=200, help="refuse a check on fewer served rows (default 200)")
    p.add_argument(
        "--threshold", type=float, default=0.1, help="PSI a feature must reach to count as drifted (default 0.1)"
    )
    p.add_argument(
        "--fdr",
        type=float,
        default=0.05,
        help="false-alarm rate of a no-drift check (Benjamini-Hochberg; default 0.05)",
    )
    p.add_argument("--categorical", help="comma-separated features compared by category whatever their type")
    p.add_argument(
        "--max-categories",
        type=int,
        help="integer columns with at most this many distinct values are compared by category too (default 20)",
    )
    p.add_argument("--out", help="folder for drift.json / drift.html (default <runs dir>/drift/<app>)")


def register(sub: argparse._SubParsersAction) -> None:
    from hpm_ray.cli_args import add_runtime_args
    from hpm_ray.serving.client import DEFAULT_URL, TOKEN_ENV

    d = sub.add_parser("drift", help="drift between the champion's training data and served traffic; retrain loop")
    actions = d.add_subparsers(dest="drift_command", metavar="ACTION", required=True, parser_class=type(d))
    c = actions.add_parser("check", help="one drift check: PSI + KS per feature and on predictions; JSON + HTML report")
    _common(c)
    c.set_defaults(func=_check)
    w = actions.add_parser(
        "watch", help="check every --interval; on drift retrain, gate, register a challenger, start an A/B"
    )
    _common(w)
    w.add_argument("--interval", default="60m", help="time between checks: 30s, 60m, 2h (default 60m)")
    w.add_argument("--once", action="store_true", help="one check (and its actions), then exit")
    w.add_argument(
        "--cooldown", default="6h", help="after a retrain, promote or rollback, no new action for this long (6h)"
    )
    w.add_argument(
        "--alarms", default="2/3", help="act when the alarm is on in K of the last N checks: K/N (default 2/3)"
    )
    w.add_argument("--iterations", type=int, help="stop after this many checks (default: run until stopped)")
    w.add_argument(
        "--dry-run", action="store_true", help="report what would be done; change nothing in the registry or the app"
    )
    w.add_argument(
        "--url",
        default=os.environ.get("HPM_RAY_SERVE_URL", DEFAULT_URL),
        help=f"the A/B app's base URL (default {DEFAULT_URL})",
    )
    w.add_argument("--token", help=f"admin bearer token (default ${TOKEN_ENV})")
    w.add_argument(
        "--pipeline",
        default="distill",
        help="what a retrain runs: distill (HPM distillation, default) or module:function, a callable (X, y) -> "
        "fitted classifier, fitted without a held-out block the gates read",
    )
    w.add_argument(
        "--source",
        choices=["served", "table"],
        default="served",
        help="retrain on labelled served rows + --reference-rows of the table (served, default) or the table alone",
    )
    w.add_argument("--label-days", type=float, default=30.0, help="served rows of the last this many days (30)")
    w.add_argument(
        "--min-labels",
        type=int,
        default=1000,
        help="labelled served rows a retrain needs (default 1000: its 20 %% held out, the new reference, is 200 rows)",
    )
    w.add_argument(
        "--reference-rows", type=int, default=2000, help="rows of the table mixed into a served retrain (2000)"
    )
    w.add_argument("--data", help="reference training table (CSV/Parquet; default: the bundled credit data)")
    w.add_argument("--target", help="label column of --data")
    w.add_argument("--gates", help="gates YAML for the retrained model (default: the app's configured gates)")
    w.add_argument("--traffic", type=float, default=10.0, help="challenger's first A/B share in percent (default 10)")
    w.add_argument(
        "--max-rows", type=int, default=10_000, help="rows the retraining uses, held-out block included (10000)"
    )
    w.add_argument("--trials", type=int, help="Optuna trials per distillation config")
    w.add_argument("--configs", type=int, help="distillation configs carried to full budget")
    w.add_argument("--students", help="comma-separated student types (default: all)")
    w.add_argument("--teacher-trees", type=int, help="trees per default teacher")
    add_runtime_args(w)
    w.set_defaults(func=_watch)
    m = actions.add_parser(
        "demo",
        help="the loop on a real shift of the credit data: late labels, watch, retrain, A/B, sequential promote",
    )
    m.add_argument("--out", default="hpm_runs/drift-demo", help="output folder (default hpm_runs/drift-demo)")
    m.add_argument("--port", type=int, default=8000, help="HTTP port of the demo's A/B app (default 8000)")
    m.add_argument("--seed", type=int, default=0, help="seed of the data split and the traffic (default 0)")
    m.add_argument("--quick", action="store_true", help="fewer rows and trials (the test's size)")
    m.add_argument("--json", action="store_true", help="end with one JSON line: shift and control outcomes")
    add_runtime_args(m)
    m.set_defaults(func=_demo)


def _fields(args: argparse.Namespace) -> dict:
    from hpm_ray.config import parse_list

    return {
        "model": args.model,
        "alias": args.alias,
        "app": args.app,
        "prediction_log": args.prediction_log,
        "window": args.window,
        "min_rows": args.min_rows,
        "threshold": args.threshold,
        "fdr": args.fdr,
        "categorical": parse_list(args.categorical, str, "--categorical"),
        "max_categories": args.max_categories,
        "out": args.out,
    }


def _check(args: argparse.Namespace) -> int:
    from hpm_ray.config import load_spec
    from hpm_ray.drift.monitor import CheckSpec, DecisionLog, run_check
    from hpm_ray.drift.report import verdict

    spec = load_spec(CheckSpec, None, _fields(args))
    with DecisionLog("drift-check", {"hpm_ray.app": spec.app}) as log:
        try:
            c = run_check(spec, log)
        except Exception as exc:
            log.decide("check", f"no check: {exc}")
            raise
        log.decide("check", verdict(c.result))
    print(f"{c.model} v{c.version}: {verdict(c.result)}; report {c.html_path}")
    return 0


def _watch(args: argparse.Namespace) -> int:
    from hpm_ray.config import load_spec, parse_list
    from hpm_ray.distill.spec import DistillSpec
    from hpm_ray.drift.hysteresis import parse_alarms
    from hpm_ray.drift.monitor import WatchSpec, parse_interval, watch
    from hpm_ray.runtime import init_ray
    from hpm_ray.serving.client import TOKEN_ENV

    parse_interval(args.interval)  # bad flags fail before anything starts, not at the first drift
    alarm_k, alarm_n = parse_alarms(args.alarms)
    if args.data and not (Path(args.data).is_file() and args.target):
        raise SpecError(
            f"--data {args.data}: file not found"
            if not Path(args.data).is_file()
            else "--data needs --target (the label column)"
        )
    distill = DistillSpec().model_dump()
    distill.update(
        method="hpm",
        max_rows=args.max_rows,
        max_configs=8,
        teacher_trees=200,
        runtime={"address": args.address, "num_cpus": args.num_cpus, "verbose": args.verbose},
    )
    for key, value in (
        ("hpm_trials", args.trials),
        ("max_configs", args.configs),
        ("teacher_trees", args.teacher_trees),
        ("students", parse_list(args.students, str, "--students")),
    ):
        if value is not None:
            distill[key] = value
    fields = {
        **_fields(args),
        "url": args.url,
        "token": args.token or os.environ.get(TOKEN_ENV),
        "interval": args.interval,
        "iterations": 1 if args.once else args.iterations,
        "dry_run": args.dry_run,
        "cooldown": args.cooldown,
        "alarm_k": alarm_k,
        "alarm_n": alarm_n,
        "data": args.data,
        "target": args.target,
        "source": args.source,
        "pipeline": args.pipeline,
        "label_days": args.label_days,
        "min_labels": args.min_labels,
        "reference_rows": args.reference_rows,
        "traffic": args.traffic,
        "gates": args.gates,
        "distill": distill,
    }
    spec = load_spec(WatchSpec, None, fields)
    if not args.dry_run:
        init_ray(args.address, args.num_cpus, args.verbose)  # retraining runs on Ray
    results = watch(spec, lambda msg: print(msg, flush=True))
    return 0 if results and results[-1].get("action") != "error" else 2


def _demo(args: argparse.Namespace) -> int:
    import json

    from hpm_ray.drift.demo import QUICK, DriftDemoPlan, run_drift_demo
    from hpm_ray.runtime import init_ray

    init_ray(args.address, args.num_cpus, getattr(args, "verbose", False))
    r = run_drift_demo(Path(args.out), QUICK if args.quick else DriftDemoPlan(), args.port, args.seed)
    s = r["shift"]
    if s["old_log_loss"] is not None and s["new_log_loss"] is not None:
        lo, hi = s["interval"] or (None, None)
        print(
            f"log loss on the shifted traffic: old champion v{s['old_version']} {s['old_log_loss']:.4f}, "
            f"retrained v{s['new_version']} {s['new_log_loss']:.4f}; difference {s['difference']:+.4f}, "
            f"95% confidence sequence [{lo:+.4f}, {hi:+.4f}] after {s['labelled_records']} records"
        )
    print(f"shift: {s['action']}; control: {r['control']['action']}; {r['wall_time_s']:.0f} s")
    if args.json:
        keys = ("action", "old_log_loss", "new_log_loss", "interval")
        print(json.dumps({"shift": {k: s[k] for k in keys}, "control": {"action": r["control"]["action"]}}))
    return 0 if s["action"] == "promoted" and r["control"]["action"] == "none" else 1
