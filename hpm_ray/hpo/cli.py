"""``hpm-ray hpo``: multi-horizon conformal quantile HPO on Ray Tune."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SPEC = Path("tune/hpo.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    from hpm_ray.cli_args import add_runtime_args

    p = sub.add_parser(
        "hpo", help="tune gradient-boosted quantile forecasters per horizon (ASHA + Optuna), calibrate with CQR"
    )
    p.add_argument("--data", help="price series file (CSV/Parquet; default: the bundled BTC hourly series)")
    p.add_argument("--time-col", help="time column (default timestamp)")
    p.add_argument("--price-col", help="price column (default close)")
    p.add_argument("--horizons", help="comma-separated horizons in bars (default 42,48,54,60)")
    p.add_argument("--quantiles", help="comma-separated symmetric quantiles (default 0.05,0.25,0.5,0.75,0.95)")
    p.add_argument("--learner", help="quantile learner: lightgbm (default), xgboost or any registered one")
    p.add_argument("--trials-per-horizon", type=int, help="trials per horizon (default 50)")
    p.add_argument("--max-rows", type=int, help="use only the most recent N bars of the series (default: all)")
    p.add_argument("--spec", help=f"YAML spec (default {DEFAULT_SPEC} when it exists)")
    p.add_argument("--out", help="output folder for summary.json and report.html (default <runs dir>/hpo)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--seed", type=int, help="random seed")
    add_runtime_args(p)
    p.set_defaults(func=hpo_cmd)


def hpo_cmd(args: argparse.Namespace) -> int:
    from hpm_ray.cli_args import runtime_flags
    from hpm_ray.config import load_spec, parse_list
    from hpm_ray.hpo.runner import run_hpo
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.runtime import runs_dir

    spec_path = args.spec or (DEFAULT_SPEC if DEFAULT_SPEC.is_file() else None)
    settings = {
        "data": args.data,
        "time_col": args.time_col,
        "price_col": args.price_col,
        "horizons": parse_list(args.horizons, int, "--horizons"),
        "quantiles": parse_list(args.quantiles, float, "--quantiles"),
        "learner": args.learner,
        "trials_per_horizon": args.trials_per_horizon,
        "seed": args.seed,
        "max_rows": args.max_rows,
    }
    spec = load_spec(HPOSpec, spec_path, {**settings, "runtime": runtime_flags(args)})
    out = Path(args.out) if args.out else runs_dir() / "hpo"
    summary = run_hpo(spec, out, resume=args.resume, given=frozenset(k for k, v in settings.items() if v is not None))
    print(summary_table(summary))
    print(f"wall time {summary['wall_time_s']} s; wrote {out / 'summary.json'} and {out / 'report.html'}")
    return 0


def summary_table(summary: dict) -> str:
    """The per-horizon results as a text table ("-" where a level has no quantile pair, e.g. 0.1/0.5/0.9)."""

    def cell(v, width: int, fmt: str) -> str:
        return f"{'-' if v is None else format(v, fmt):>{width}}"

    lines = [
        (
            f"{'horizon':>7} {'ships':>7} {'trials':>6} {'pruned':>6} {'test pinball':>12} {'naive':>9} {'interval':>8} "
            f"{'cov90':>6} "
            f"{'cov90 by vol tercile':>20} {'cov90 CQR':>9} {'cov90 ACI':>9} {'cov50':>6} {'crossing':>8}"
        )
    ]
    for h, e in summary["horizons"].items():
        terciles = e.get("coverage_90_by_vol_tercile") or [None] * 3
        by_vol = " ".join(cell(v, 6, ".3f") for v in terciles)
        lines.append(
            f"{h:>7} {e['registered_family']:>7} {e['n_trials']:>6} {e['n_pruned']:>6} {e['test_pinball']:>12.6f} "
            f"{e['baselines']['naive']['test_pinball']:>9.6f} {e['interval_method']:>8} "
            f"{cell(e['coverage_90'], 6, '.3f')} {by_vol:>20} "
            f"{cell(e['coverage_90_cqr'], 9, '.3f')} {cell(e['coverage_90_aci'], 9, '.3f')} "
            f"{cell(e['coverage_50'], 6, '.3f')} {e['crossing_rate']:>8.3f}"
        )
    return "\n".join(lines)
