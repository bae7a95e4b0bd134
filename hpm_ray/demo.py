"""``hpm-ray demo``: the main job on bundled data, end to end (README command 1)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the bundled data")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from hpm_ray.data.describe import describe, format_description
    from hpm_ray.data.io import read_table
    from hpm_ray.datasets import CREDIT_TARGET, bundled_path

    for name, target in (("credit", CREDIT_TARGET), ("btc", None)):
        print(f"== bundled dataset: {name} ({bundled_path(name).name})")
        print(format_description(describe(read_table(bundled_path(name)), target=target)))
    return 0
