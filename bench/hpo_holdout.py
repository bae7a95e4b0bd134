"""A second untouched block for a finished ``hpm-ray hpo`` run: how its winners do on data the search never saw.

The run's own test block is one regime (for the bundled BTC series, 2022). This replays each horizon's winning
config in a nested split of the same series, one block earlier: fit on the train block, CQR on the validation
block, score on the calibration block, which no trial, refit or calibration of the run looked at. Same
procedure for LightGBM defaults; the naive baseline is the train block's unconditional quantiles. Prints test
pinball relative to naive (below 1 = better than naive) and the 90 % coverage.

    python bench/hpo_holdout.py --run OUT_DIR      # OUT_DIR: the --out of a finished hpm-ray hpo run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="output folder of a finished hpm-ray hpo run")
    a = ap.parse_args()

    from hpm_ray.config import load_spec
    from hpm_ray.hpo.conformal import ConformalQuantiles
    from hpm_ray.hpo.evaluate import DEFAULT_CONFIG, naive_quantiles
    from hpm_ray.hpo.runner import load_series, prepare_horizon
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.hpo.trainable import boost, predict_quantiles, train_boosters
    from hpm_ray.metrics import coverage, mean_pinball

    summary = json.loads((a.run / "summary.json").read_text())
    spec = load_spec(HPOSpec, None, json.loads((a.run / "run.json").read_text())["spec"])
    series, q = load_series(spec), list(spec.quantiles)

    def score(config: dict, rounds: int, hz) -> tuple[float, float]:
        d, b = hz.data, hz.blocks
        boosters = train_boosters(config, d.X[b.train], d.y[b.train] / d.scale[b.train], q, spec.seed)
        boost(boosters, rounds)
        fit_on, held = (predict_quantiles(boosters, d.X[rows]) * d.scale[rows, None] for rows in (b.validation, b.calibration))
        calibrated = ConformalQuantiles(q).fit(fit_on, d.y[b.validation]).transform(held)
        return mean_pinball(d.y[b.calibration], calibrated, q), coverage(d.y[b.calibration], calibrated[:, 0], calibrated[:, -1])

    print("| h | held-out block | tuned / naive | default LGBM / naive | tuned cov90 | run's test: tuned / naive |")
    print("|---|---|---|---|---|---|")
    for key, entry in summary["horizons"].items():
        hz = prepare_horizon(series, int(key), spec)
        b, y = hz.blocks, hz.data.y
        naive = mean_pinball(y[b.calibration], naive_quantiles(y[b.train], q, len(b.calibration)), q)
        tuned, cov = score(entry["best_params"], summary["details"][key]["best_rounds"], hz)
        default, _ = score(DEFAULT_CONFIG, spec.max_rounds, hz)
        span = f"{hz.X.index[b.calibration[0]]:%Y-%m-%d} .. {hz.X.index[b.calibration[-1]]:%Y-%m-%d}"
        print(f"| {key} | {span} | {tuned / naive:.4f} | {default / naive:.4f} | {cov:.3f} | "
              f"{entry['test_pinball'] / entry['baselines']['naive']:.4f} |")


if __name__ == "__main__":
    main()
