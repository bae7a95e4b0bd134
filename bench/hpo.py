"""Ray Tune (OptunaSearch TPE + ASHA, reused actors) vs plain sequential Optuna (TPE + its own pruner).

Same search space, same trial budget, same data, same per-trial training code (``fit_steps``): only the
orchestration differs. The peers run in alternating rounds; prints each round's wall-time ratio and their
median, both best validation pinballs (Tune's ratio only counts if its best is equal or better) and Tune's mean
per-trial overhead: (wall x parallel trial slots - sum of in-trial training time) / trials.

    python bench/hpo.py                       # small: last 8,000 BTC bars, horizon 24, 16 trials
    python bench/hpo.py --rows 0 --horizon 42 --trials 20   # full series
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000, help="last N bars of the bundled BTC series (0 = all)")
    ap.add_argument("--horizon", type=int, default=24)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--max-rounds", type=int, default=200)
    ap.add_argument("--report-every", type=int, default=20)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds of both peers")
    a = ap.parse_args()

    import optuna
    import ray

    from hpm_ray.cli import quiet
    from hpm_ray.data.datasets import load_btc_hourly
    from hpm_ray.data.io import Series
    from hpm_ray.hpo.runner import prepare_horizon
    from hpm_ray.hpo.search import TUNE_ENV, SearchSettings, make_tuner, records
    from hpm_ray.hpo.space import suggest
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.hpo.trainable import fit_steps
    from hpm_ray.runtime import init_ray

    quiet()
    os.environ.update(TUNE_ENV)  # the Tuner runs in this process here, not in hpm-ray's search task
    s = load_btc_hourly()
    if a.rows:
        s = Series(s.frame.iloc[-a.rows :].copy(), s.time_col, s.price_col)
    spec = HPOSpec(horizons=[a.horizon], max_rounds=a.max_rounds, report_every=a.report_every, seed=a.seed)
    data = prepare_horizon(s, a.horizon, spec).data
    print(
        f"data: {len(data.y)} rows, horizon {a.horizon}, {len(data.folds)} folds; {a.trials} trials of up to "
        f"{a.max_rounds} rounds x {len(data.quantiles)} quantiles; ASHA grace {spec.grace_period} rf {spec.reduction_factor}"
    )

    # --- plain Optuna, sequential, with Optuna's own successive-halving pruner at the same rungs --------------
    def objective(trial):
        best = np.inf
        for step, (rounds, score) in enumerate(fit_steps(suggest(trial, data.learner.space), data), start=1):
            best = min(best, score)
            trial.report(score, step)
            if trial.should_prune():
                trial.set_user_attr("best", best)
                raise optuna.TrialPruned()
        trial.set_user_attr("best", best)
        return best  # the score both peers select on, as hpm-ray's Tune searcher tells its study

    def run_optuna() -> tuple[float, float, int]:
        study = optuna.create_study(
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=a.seed),
            pruner=optuna.pruners.SuccessiveHalvingPruner(
                min_resource=spec.grace_period, reduction_factor=spec.reduction_factor
            ),
        )
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=a.trials)
        wall = time.perf_counter() - t0
        best = min(t.user_attrs["best"] for t in study.trials if "best" in t.user_attrs)
        return wall, best, sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)

    # --- Ray Tune: one experiment, parallel trials on all CPUs ------------------------------------------------
    init_ray(num_cpus=a.num_cpus)  # started before either peer runs: both share a machine with an idle Ray
    ref = ray.put(data)
    slots = int(ray.cluster_resources()["CPU"])

    def run_tune() -> tuple[float, float, int, float]:
        with tempfile.TemporaryDirectory() as storage:
            settings = SearchSettings(
                name="bench",
                storage=storage,
                num_samples=a.trials,
                max_reports=spec.max_reports,
                grace_period=spec.grace_period,
                reduction_factor=spec.reduction_factor,
                max_concurrent=slots,
                seed=a.seed,
                space=data.learner.space,
            )
            t0 = time.perf_counter()
            grid = make_tuner(settings, ref).fit()
            wall = time.perf_counter() - t0
            recs = records(grid, spec.max_reports)
        busy = sum(float(r.metrics.get("time_total_s", 0.0)) for r in grid)
        return (
            wall,
            min(r.best[1] for r in recs if r.best),
            sum(r.pruned for r in recs),
            (wall * slots - busy) / a.trials,
        )

    # Alternate the peers: this machine's speed drifts by up to 3x over minutes, which one pair cannot cancel.
    print(f"{'round':<7}{'peer':<20}{'wall s':>9}{'best val pinball':>18}{'pruned':>8}{'overhead s/trial':>18}")
    ratios, overheads, worse = [], [], False
    for i in range(1, a.repeats + 1):
        o_wall, o_best, o_pruned = run_optuna()
        t_wall, t_best, t_pruned, overhead = run_tune()
        print(f"{i:<7}{'optuna sequential':<20}{o_wall:>9.1f}{o_best:>18.6f}{o_pruned:>8}")
        print(f"{i:<7}{'ray tune x' + str(slots):<20}{t_wall:>9.1f}{t_best:>18.6f}{t_pruned:>8}{overhead:>18.2f}")
        ratios.append(o_wall / t_wall)
        overheads.append(overhead)
        worse |= t_best > o_best * (1 + 1e-3)
    verdict = "WORSE" if worse else "equal or better"
    print(
        f"speed-up optuna/tune wall time: {', '.join(f'{r:.2f}x' for r in ratios)}; median {np.median(ratios):.2f}x "
        f"(tune best is {verdict}; target >= 1.5x)"
    )
    print(
        f"tune mean per-trial overhead: {np.median(overheads):.2f} s (wall x {slots} slots - in-trial time, per trial)"
    )


if __name__ == "__main__":
    main()
