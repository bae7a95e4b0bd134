"""``hpm-ray data ...`` subcommands."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect data files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True, parser_class=type(p))
    d = dsub.add_parser("describe", help="rows, columns, dtypes, missing values, target balance or time range")
    d.add_argument("--data", help="CSV, CSV.gz or Parquet file, or a bundled name: 'credit' or 'btc' (default: credit)")
    d.add_argument("--target", help="target column: show its class balance")
    d.add_argument("--time-col", help="time column: show the time range (guessed from timestamp/date/time if absent)")
    d.add_argument("--price-col", default="close", help="price column checked with --horizons (default: close)")
    d.add_argument(
        "--horizons", help="comma-separated horizons in bars: check the series and show the block sizes of each"
    )
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(func=describe_cmd)


def describe_cmd(args: argparse.Namespace) -> int:
    from hpm_ray.config import parse_list
    from hpm_ray.data.datasets import CREDIT_TARGET, bundled_path
    from hpm_ray.data.describe import describe, format_description
    from hpm_ray.data.io import read_table

    target = args.target
    path = args.data or "credit"
    if path in ("credit", "btc"):
        if path == "credit" and target is None:
            target = CREDIT_TARGET
        path = bundled_path(path)
    horizons = parse_list(args.horizons, int, "--horizons")
    d = describe(read_table(path), target=target, time_col=args.time_col, price_col=args.price_col, horizons=horizons)
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0
