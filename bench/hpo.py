"""Ray Tune (OptunaSearch TPE + ASHA, reused actors) vs plain sequential Optuna (TPE + its own pruner).

Same search space, same trial budget, same data, same per-trial training code (``fit_steps``): only the
orchestration differs. Prints the wall-time ratio, both best validation pinballs (Tune's ratio only counts
if its best is equal or better) and Tune's mean per-trial overhead:
    (wall x parallel trial slots - sum of in-trial training time) / trials.

    python bench/hpo.py                       # small: last 8,000 BTC bars, horizon 24, 16 trials
    python bench/hpo.py --rows 0 --horizon 42 --trials 20   # full series
"""

from __future__ import annotations

import argparse
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
    a = ap.parse_args()

    import optuna
    import ray

    from hpm_ray.data.io import Series
    from hpm_ray.datasets import load_btc_hourly
    from hpm_ray.hpo.runner import prepare_horizon
    from hpm_ray.hpo.search import SearchSettings, make_tuner, records
    from hpm_ray.hpo.space import suggest
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.hpo.trainable import fit_steps
    from hpm_ray.runtime import init_ray, quiet

    quiet()
    s = load_btc_hourly()
    if a.rows:
        s = Series(s.frame.iloc[-a.rows:].copy(), s.time_col, s.price_col)
    spec = HPOSpec(horizons=[a.horizon], max_rounds=a.max_rounds, report_every=a.report_every, seed=a.seed)
    data = prepare_horizon(s, a.horizon, spec).data
    print(f"data: {len(data.y)} rows, horizon {a.horizon}, {len(data.folds)} folds; {a.trials} trials of up to "
          f"{a.max_rounds} rounds x {len(data.quantiles)} quantiles; ASHA grace {spec.grace_period} rf {spec.reduction_factor}")

    # --- plain Optuna, sequential, with Optuna's own successive-halving pruner at the same rungs --------------
    def objective(trial):
        best = np.inf
        for step, (rounds, score) in enumerate(fit_steps(suggest(trial), data), start=1):
            best = min(best, score)
            trial.report(score, step)
            if trial.should_prune():
                trial.set_user_attr("best", best)
                raise optuna.TrialPruned()
        trial.set_user_attr("best", best)
        return score

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=a.seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.grace_period, reduction_factor=spec.reduction_factor),
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=a.trials)
    optuna_wall = time.perf_counter() - t0
    optuna_best = min(t.user_attrs["best"] for t in study.trials if "best" in t.user_attrs)
    optuna_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)

    # --- Ray Tune: one experiment, parallel trials on all CPUs ------------------------------------------------
    init_ray(num_cpus=a.num_cpus)
    ref = ray.put(data)
    slots = int(ray.cluster_resources()["CPU"])
    with tempfile.TemporaryDirectory() as storage:
        settings = SearchSettings(
            name="bench", storage=storage, num_samples=a.trials, max_reports=spec.max_reports,
            grace_period=spec.grace_period, reduction_factor=spec.reduction_factor, max_concurrent=slots, seed=a.seed,
        )
        t0 = time.perf_counter()
        grid = make_tuner(settings, ref).fit()
        tune_wall = time.perf_counter() - t0
        recs = records(grid, spec.max_reports)
    busy = sum(float(r.metrics.get("time_total_s", 0.0)) for r in grid)
    tune_best = min(r.best[1] for r in recs if r.best)
    overhead = (tune_wall * slots - busy) / a.trials

    print(f"{'':22}{'wall s':>9}{'best val pinball':>18}{'pruned':>8}")
    print(f"{'optuna sequential':22}{optuna_wall:>9.1f}{optuna_best:>18.6f}{optuna_pruned:>8}")
    print(f"{'ray tune x' + str(slots):22}{tune_wall:>9.1f}{tune_best:>18.6f}{sum(r.pruned for r in recs):>8}")
    verdict = "equal or better" if tune_best <= optuna_best * (1 + 1e-3) else "WORSE"
    print(f"speed-up optuna/tune wall time: {optuna_wall / tune_wall:.2f}x (tune best is {verdict}; target >= 3x)")
    print(f"tune mean per-trial overhead: {overhead:.2f} s (wall x {slots} slots - in-trial time, per trial)")


if __name__ == "__main__":
    main()
