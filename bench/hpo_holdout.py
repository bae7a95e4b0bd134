"""Earlier held-out blocks for a finished ``hpm-ray hpo`` run: how its winners do on other regimes than its test block.

A run's test block is one stretch of one market (for the bundled BTC series, 2022), so "beats naive on test"
says as much about that stretch as about the models. This replays each horizon's winning config (and the learner's
defaults) at several earlier origins, never touching the run's test block: score a block of the run's
calibration size, CQR on the block before it, fit on everything before that (purged gaps between, as in the
run); naive = the fit rows' unconditional quantiles. Block 0 is the run's calibration block, which no trial
or refit saw. Blocks that overlap the run's validation block are marked: the winners were chosen on them, so
their ratios flatter the tuned model.

    python bench/hpo_holdout.py --run OUT_DIR [--blocks 5]   # OUT_DIR: the --out of a finished hpm-ray hpo run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="output folder of a finished hpm-ray hpo run")
    ap.add_argument("--blocks", type=int, default=5, help="held-out blocks per horizon, latest first")
    a = ap.parse_args()

    from hpm_ray.config import load_spec
    from hpm_ray.data.splitters import PurgedWalkForward
    from hpm_ray.hpo.baselines import naive_quantiles
    from hpm_ray.hpo.conformal import ConformalQuantiles
    from hpm_ray.hpo.learners import get_learner
    from hpm_ray.hpo.runner import load_series, prepare_horizon
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.metrics import coverage, mean_pinball

    summary = json.loads((a.run / "summary.json").read_text())
    spec = load_spec(HPOSpec, None, json.loads((a.run / "run.json").read_text())["spec"])
    series, q = load_series(spec), list(spec.quantiles)

    def calibrated_score(d, cal, held, q_cal, q_held) -> tuple[float, float]:
        calibrated = ConformalQuantiles(q).fit(q_cal, d.y[cal]).transform(q_held)
        return mean_pinball(d.y[held], calibrated, q), coverage(d.y[held], calibrated[:, 0], calibrated[:, -1])

    def score(config: dict, rounds: int, d, fit, cal, held) -> tuple[float, float]:
        model = d.learner.start(config, d.X[fit], d.y[fit] / d.scale[fit], q, spec.seed)
        model.grow(rounds)
        return calibrated_score(d, cal, held, *(model.predict(d.X[r]) * d.scale[r, None] for r in (cal, held)))

    def scale_only(d, fit, cal, held) -> float:
        z = np.quantile(d.y[fit] / d.scale[fit], q)
        return calibrated_score(d, cal, held, np.outer(d.scale[cal], z), np.outer(d.scale[held], z))[0]

    untuned = f"default {get_learner(spec.learner).short.upper()}"
    print(
        f"| h | block | held-out span | fit rows | tuned / naive | {untuned} / naive | scale only / naive "
        "| tuned cov90 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ratios: dict[bool, list[float]] = {True: [], False: []}
    for key, entry in summary["horizons"].items():
        hz = prepare_horizon(series, int(key), spec)
        b, d = hz.blocks, hz.data
        gap, size = PurgedWalkForward(hz.h, spec.embargo).gap, len(b.calibration)
        rounds = summary["details"][key]["best_rounds"]
        for k in range(a.blocks):
            end = b.calibration[-1] + 1 - k * (size + gap)
            held = np.arange(end - size, end)
            cal = np.arange(held[0] - gap - size, held[0] - gap)
            fit = np.arange(0, cal[0] - gap)
            if len(fit) < size:
                break
            naive = mean_pinball(d.y[held], naive_quantiles(d.y[fit], q, size), q)
            tuned, cov = score(entry["best_params"], rounds, d, fit, cal, held)
            default, _ = score(d.learner.defaults, spec.max_rounds, d, fit, cal, held)
            scaled = scale_only(d, fit, cal, held)
            chosen_on = bool(np.intersect1d(held, b.validation).size)
            ratios[chosen_on].append(tuned / naive)
            span = f"{hz.X.index[held[0]]:%Y-%m-%d} .. {hz.X.index[held[-1]]:%Y-%m-%d}"
            print(
                f"| {key} | {k}{' (validation)' if chosen_on else ''} | {span} | {len(fit)} | {tuned / naive:.4f} | "
                f"{default / naive:.4f} | {scaled / naive:.4f} | {cov:.3f} |",
                flush=True,
            )
    for chosen_on, rs in ratios.items():
        if rs:
            label = "overlapping the validation block" if chosen_on else "outside the search's validation block"
            print(
                f"\nblocks {label}: tuned / naive mean {np.mean(rs):.4f}, below naive in {sum(r < 1 for r in rs)} of {len(rs)}"
            )
    tests = [e["tuned_test_pinball"] / e["baselines"]["naive"]["test_pinball"] for e in summary["horizons"].values()]
    print(f"the run's own test block: tuned / naive {', '.join(f'{r:.4f}' for r in tests)}")


if __name__ == "__main__":
    main()
