"""Ray Tune (OptunaSearch TPE + ASHA, reused actors) vs plain sequential Optuna (TPE + its own pruner).

Same search space, same trial budget, same data, same per-trial training code (``fit_steps``): only the
orchestration differs. Given several horizons, Tune runs them as ``hpm-ray hpo`` does (one experiment per horizon,
each in its own Ray task, concurrently, the CPUs shared as the runner shares them) and Optuna runs one study per
horizon, one after the other. The peers run in alternating rounds; prints each round's wall-time ratio and their
median, the best validation pinball per horizon of both (Tune's ratio only counts if its best is equal or better
on every horizon) and Tune's mean per-trial overhead, two ways: inside each experiment's search (its span from
the first trial's start to the last trial's end x its slots - in-trial time, per trial: what Tune adds between
trials, as ``bench/scale.py`` measures it), and over the whole job (wall x all slots - in-trial time, per trial:
also each experiment's start and the idle tail while the slowest horizon finishes).

    python bench/hpo.py                       # small: last 8,000 BTC bars, horizon 24, 16 trials
    python bench/hpo.py --horizons 6,12,24,48  # the 4-horizon job against sequential Optuna per horizon
    python bench/hpo.py --rows 0 --horizons 42 --trials 20   # full series
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tune_results import trial_overhead


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8000, help="last N bars of the bundled BTC series (0 = all)")
    ap.add_argument("--horizons", default="24", help="comma-separated horizons in bars")
    ap.add_argument("--trials", type=int, default=16, help="per horizon")
    ap.add_argument("--max-rounds", type=int, default=200)
    ap.add_argument("--report-every", type=int, default=20)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds of both peers")
    a = ap.parse_args()
    horizons = [int(h) for h in a.horizons.split(",")]

    import optuna
    import ray

    from hpm_ray.cli import quiet
    from hpm_ray.data.datasets import load_btc_hourly
    from hpm_ray.data.io import Series
    from hpm_ray.hpo.runner import prepare_horizon
    from hpm_ray.hpo.search import SearchSettings, run_search, share_cpus
    from hpm_ray.hpo.space import suggest
    from hpm_ray.hpo.spec import HPOSpec
    from hpm_ray.hpo.trainable import fit_steps
    from hpm_ray.runtime import init_ray

    quiet()
    s = load_btc_hourly()
    if a.rows:
        s = Series(s.frame.iloc[-a.rows :].copy(), s.time_col, s.price_col)
    spec = HPOSpec(
        horizons=horizons,
        max_rounds=a.max_rounds,
        report_every=a.report_every,
        seed=a.seed,
        trials_per_horizon=a.trials,
    )
    datas = {h: prepare_horizon(s, h, spec).data for h in horizons}
    d0 = datas[horizons[0]]
    print(
        f"data: {len(d0.y)} rows, horizons {horizons}, {len(d0.folds)} folds; {a.trials} trials per horizon of up to "
        f"{a.max_rounds} rounds x {len(d0.quantiles)} quantiles; ASHA grace {spec.grace_period} rf {spec.reduction_factor}"
    )

    # --- plain Optuna, one study per horizon, sequential, Optuna's successive-halving pruner at the same rungs ---
    def objective(trial, data):
        best = np.inf
        for step, (rounds, score) in enumerate(fit_steps(suggest(trial, data.learner.space), data), start=1):
            best = min(best, score)
            trial.report(score, step)
            if trial.should_prune():
                trial.set_user_attr("best", best)
                raise optuna.TrialPruned()
        trial.set_user_attr("best", best)
        return best  # the score both peers select on, as hpm-ray's Tune searcher tells its study

    def run_optuna() -> tuple[float, dict[int, float], int]:
        bests, pruned = {}, 0
        t0 = time.perf_counter()
        for h, data in datas.items():
            study = optuna.create_study(
                direction="minimize",
                sampler=optuna.samplers.TPESampler(seed=a.seed + h),
                pruner=optuna.pruners.SuccessiveHalvingPruner(
                    min_resource=spec.grace_period, reduction_factor=spec.reduction_factor
                ),
            )
            study.optimize(lambda t, data=data: objective(t, data), n_trials=a.trials)
            bests[h] = min(t.user_attrs["best"] for t in study.trials if "best" in t.user_attrs)
            pruned += sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
        return time.perf_counter() - t0, bests, pruned

    # --- Ray Tune: one experiment per horizon, each in a Ray task, as run_hpo runs them ---------------------------
    init_ray(num_cpus=a.num_cpus)  # started before either peer runs: both share a machine with an idle Ray
    refs = {h: ray.put(data) for h, data in datas.items()}
    cpus = int(ray.cluster_resources()["CPU"])
    concurrent, trial_cpus = share_cpus(cpus, len(horizons))  # as run_hpo shares the CPUs between horizons
    slots = concurrent * len(horizons)

    def run_tune() -> tuple[float, dict[int, float], int, float, float]:
        with tempfile.TemporaryDirectory() as storage:
            settings = {
                h: SearchSettings.for_horizon(
                    spec,
                    h,
                    datas[h].learner.space,
                    name=f"bench-h{h}",
                    storage=storage,
                    max_concurrent=concurrent,
                    trial_cpus=trial_cpus,
                )
                for h in horizons
            }
            t0 = time.perf_counter()
            recs = dict(zip(horizons, ray.get([run_search.remote(settings[h], [refs[h]]) for h in horizons])))
            wall = time.perf_counter() - t0
            busy = sum(
                json.loads(f.read_text().splitlines()[-1])["time_total_s"]
                for f in Path(storage).glob("*/*/result.json")
                if f.read_text().strip()
            )
            # inside each experiment: its search span x its slots - in-trial time, per trial (no start, no tail)
            inside = float(np.mean([trial_overhead(Path(storage) / f"bench-h{h}", concurrent) for h in horizons]))
        bests = {h: min(r.best[1] for r in rs if r.best) for h, rs in recs.items()}
        n = sum(len(rs) for rs in recs.values())
        return wall, bests, sum(r.pruned for rs in recs.values() for r in rs), (wall * slots - busy) / n, inside

    # Alternate the peers: this machine's speed drifts by up to 3x over minutes, which one pair cannot cancel.
    print(
        f"tune: {len(horizons)} experiment(s) x {concurrent} concurrent trial(s) at {trial_cpus:g} CPU on {cpus} CPUs"
    )
    fmt = lambda b: " ".join(f"{b[h]:.6f}" for h in horizons)
    print(
        f"{'round':<7}{'peer':<22}{'wall s':>9}  {'best val pinball per horizon':<{10 * len(horizons)}}{'pruned':>7}{'overhead s/trial job':>21}{'in search':>11}"
    )
    ratios, overheads, insides, worse = [], [], [], False
    for i in range(1, a.repeats + 1):
        o_wall, o_best, o_pruned = run_optuna()
        t_wall, t_best, t_pruned, overhead, inside = run_tune()
        w = 10 * len(horizons)
        print(f"{i:<7}{'optuna sequential':<22}{o_wall:>9.1f}  {fmt(o_best):<{w}}{o_pruned:>7}")
        print(
            f"{i:<7}{'ray tune x' + str(slots):<22}{t_wall:>9.1f}  {fmt(t_best):<{w}}{t_pruned:>7}{overhead:>21.2f}{inside:>11.2f}"
        )
        ratios.append(o_wall / t_wall)
        overheads.append(overhead)
        insides.append(inside)
        worse |= any(t_best[h] > o_best[h] * (1 + 1e-3) for h in horizons)
    verdict = "WORSE on some horizon" if worse else "equal or better on every horizon"
    print(
        f"speed-up optuna/tune wall time: {', '.join(f'{r:.2f}x' for r in ratios)}; median {np.median(ratios):.2f}x "
        f"(tune best is {verdict}; target >= 1.5x)"
    )
    print(
        f"tune per-trial overhead (median of rounds): {np.median(insides):.2f} s inside the searches (span x slots -"
        f" in-trial time, per trial, from the trials' own report times; target <= 0.1 s); "
        f"{np.median(overheads):.2f} s over the whole job (wall x {slots} slots, with the starts and the idle tail)"
    )


if __name__ == "__main__":
    main()
