"""``hpm-ray distill``: distil a teacher into small students on Ray; writes results, summary and report."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from hpm_ray.cli_args import add_runtime_args

    p = sub.add_parser("distill", help="HPM-KD distillation: soft-label students on Ray (legacy grid, hpm, hybrid)")
    p.add_argument("--data", help="CSV/Parquet table (default: the bundled credit-default data)")
    p.add_argument("--target", help="target column (default for the bundled data: its label)")
    p.add_argument("--drop", default="", help="comma-separated columns to ignore (ids)")
    p.add_argument("--method", choices=["auto", "legacy", "hpm", "hybrid"], help="default: the spec's (auto)")
    p.add_argument("--spec", help="YAML spec (see tune/distill.yaml)")
    p.add_argument("--max-configs", type=int, help="configs carried to full budget by hpm (default 16)")
    p.add_argument("--max-rows", type=int, help="stratified row subsample before splitting")
    p.add_argument(
        "--students",
        help="comma-separated student types, e.g. scorecard,tree4,gbm20,ebm (default: the spec's; readable students "
        "export a points table / rules / shape tables; ebm needs pip install 'hpm-ray[ebm]')",
    )
    p.add_argument("--out", default=None, help="output folder (default: <runs dir>/distill)")
    p.add_argument("--seed", type=int)
    p.add_argument("--register-name", default="hpm-distilled-student", help="MLflow registered model name")
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging and registration")
    add_runtime_args(p)
    p.set_defaults(func=run_distill)


def run_distill(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from hpm_ray.cli_args import runtime_flags
    from hpm_ray.config import load_spec, parse_list
    from hpm_ray.data.datasets import CREDIT_TARGET, bundled_path
    from hpm_ray.data.io import prepare_tabular, read_table
    from hpm_ray.distill.auto import AutoDistiller
    from hpm_ray.distill.spec import DistillSpec
    from hpm_ray.errors import DataError
    from hpm_ray.runtime import runs_dir

    students = parse_list(args.students, str, "--students")
    if students is not None:
        from hpm_ray.distill.spec import check_students
        from hpm_ray.errors import SpecError

        try:
            check_students(students)
        except SpecError as exc:
            raise SpecError(f"--students: {exc}") from None
    overrides = {
        "method": args.method,
        "max_configs": args.max_configs,
        "seed": args.seed,
        "max_rows": args.max_rows,
        "students": students,
        "runtime": runtime_flags(args),
    }
    spec = load_spec(DistillSpec, args.spec, overrides)
    if args.data is None:
        path, target, drop = bundled_path("credit"), args.target or CREDIT_TARGET, ["ID"]
    else:
        if not args.target:
            raise DataError("--target is required with --data")
        path, target, drop = Path(args.data), args.target, []
    drop += parse_list(args.drop, str, "--drop") or []
    tab = prepare_tabular(read_table(path), target, drop=drop)
    out = Path(args.out) if args.out else runs_dir() / "distill"
    out.mkdir(parents=True, exist_ok=True)

    d = AutoDistiller(tab.X, tab.y, method=spec.method, spec=spec)
    results = d.run()
    results.to_csv(out / "results.csv", index=False)
    (out / "summary.json").write_text(json.dumps(d.summary(), indent=2))
    exports = _write_exports(d, out / "exports")
    d.generate_report(out / "report.html")
    if not args.no_mlflow:
        from hpm_ray.distill.tracking import log_distillation

        log_distillation(d, out, args.register_name)
    s = json.loads((out / "summary.json").read_text())
    b, t = s["best"], s["teacher"]
    print(f"method {s['method']}: {s['n_fits']} fits, {s['n_configs_evaluated']} configs, {s['wall_time_s']:.1f} s")
    print(
        f"teacher test AUC {t['auc']:.4f}; best student {b['student']} (T={b['temperature']:g}, alpha={b['alpha']:g}) "
        f"test AUC {b['auc']:.4f}, hard-label twin {s['hard_label_twin']['auc']:.4f}"
    )
    if exports:
        print(f"readable exports: {', '.join(str(f) for f in exports)}")
    print(
        f"wrote {out / 'results.csv'}, {out / 'summary.json'}, {out / 'report.html'}"
        + (f"; registered {b['model_uri']}" if b.get("model_uri") else "")
    )
    return 0


def _write_exports(d, out):
    """Points table / rules of the validation-best student of every readable preset in the run."""
    from hpm_ray.distill.auto import STUDENT_STAGES
    from hpm_ray.distill.evaluate import better
    from hpm_ray.distill.export import write_artifacts

    df = d.results_
    ok = df[df.stage.isin(STUDENT_STAGES) & (df.status == "ok")]
    files = []
    for student, part in ok.groupby("student"):
        i = part.val_score.idxmax() if better(d.metric, 1.0, 0.0) else part.val_score.idxmin()
        files += write_artifacts(d.records[i]["model"], out, str(student))
    return files
