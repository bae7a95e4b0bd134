"""Distillation benchmarks (numbers for BENCHMARKS.md), each against a peer measured in the same run.

1. Teacher sharing: one ObjectRef read by N Ray tasks vs the same arrays passed by value to a process pool
   (wall time and private memory each task adds).
2. legacy vs hpm on the same rows and the same cached teachers: wall time, fits, best test AUC.
3. Shared memory: trials a warm-started study needs to reach the best validation score of a cold one, per
   seed pair (--memory-seeds; similar data may have another size: --memory-similar-rows).
4. --quality-seeds: hpm on the bundled credit data per seed: best student (<= 100 trees) test AUC vs teacher
   and vs its hard-label twin.
5. calibration: a LightGBM student at alpha 0.9 and T = 0.5 / 1 / 3 (10 trials each): mean P(class 1) and ECE
   on test, raw (temperature still in) vs served (temperature undone, calibrated on validation), and its twin.
6. ablation: hpm with every default, then with one component of tune/distill.yaml switched at a time (same
   rows, seed and cached teachers; each run its own empty memory): the best student's validation score,
   test AUC and ECE, fits and wall time. One run per row, no interval.
Rows may be subsampled (--rows) so legacy's 640+ fits fit in minutes on 2 cores; the output says so.

    python bench/distill.py --rows 6000
    python bench/distill.py --parts '' --quality-seeds 0,1,2
    python bench/distill.py --parts calibration --calibration-rows 0   # 0: every row
    python bench/distill.py --parts ablation --rows 6000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def _private_mb() -> float:
    """Private (unshared) resident memory of this process, from /proc/self/smaps_rollup."""
    kb = 0
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kb += int(line.split()[1])
    return kb / 1024.0


def _touch(payload: dict) -> tuple[int, float]:
    """Read every array (as a task would); return (pid, private memory now)."""
    float(sum(float(np.asarray(v).sum()) for v in payload.values()))
    return os.getpid(), _private_mb()


def _ray_task(box: list) -> tuple[int, float]:
    import ray

    return _touch(ray.get(box[0]))


def _added(baseline: dict[int, float], measured: list[tuple[int, float]]) -> float:
    """Mean private memory a task holds above its (warmed-up, idle) worker's baseline."""
    return float(np.mean([mb - baseline.get(pid, mb) for pid, mb in measured]))


def bench_sharing(n_tasks: int, mb: int) -> None:
    import ray

    rows = mb * 2**20 // (8 * 25)
    rng = np.random.default_rng(0)
    payload = {"X_train": rng.normal(size=(rows, 23)), "teacher_train": rng.dirichlet([1, 1], rows)}
    size = sum(v.nbytes for v in payload.values()) / 2**20
    tiny = {"a": np.zeros(1)}
    remote = ray.remote(num_cpus=1)(_ray_task)
    base = dict(ray.get([remote.remote([ray.put(tiny)]) for _ in range(4)]))  # warm the workers
    t = time.perf_counter()
    ref = ray.put(payload)
    ray_mem = ray.get([remote.remote([ref]) for _ in range(n_tasks)])
    ray_s = time.perf_counter() - t
    with ProcessPoolExecutor(2) as pool:
        pool_base = dict(pool.map(_touch, [tiny] * 4))
        t = time.perf_counter()
        pool_mem = list(pool.map(_touch, [payload] * n_tasks))
        pool_s = time.perf_counter() - t
    print(f"\n== teacher sharing: {size:.0f} MiB payload (X_train + teacher probabilities), {n_tasks} tasks, 2 CPUs")
    print(
        f"ray ObjectRef (put once) : {ray_s:6.2f} s total, private memory per task above idle {_added(base, ray_mem):7.1f} MiB"
    )
    print(
        f"process pool (by value)  : {pool_s:6.2f} s total, private memory per task above idle {_added(pool_base, pool_mem):7.1f} MiB"
    )
    print(f"ratio pool/ray           : {pool_s / ray_s:6.1f}x time")


def _best_auc(d, method: str) -> tuple[float, float]:
    df = d.results_
    cand = df[(df.method == method) & df.stage.isin(("full", "chain")) & (df.status == "ok")]
    hib = d.metric != "log_loss"
    row = cand.loc[cand.val_score.idxmax() if hib else cand.val_score.idxmin()]
    return float(row.auc), float(row.twin_auc)


def _import_students() -> int:
    import lightgbm  # noqa: F401 - worker warm-up

    return os.getpid()


def bench_compare(X, y, rows: int, seed: int) -> None:
    import ray

    from hpm_ray.distill.auto import AutoDistiller

    # start and warm the worker processes first, so neither method pays their start-up
    ray.get([ray.remote(num_cpus=1)(_import_students).remote() for _ in range(4)])

    d = AutoDistiller(
        X, y, method="hybrid", max_rows=rows, seed=seed, memory_path=os.path.join(tempfile.mkdtemp(), "memory.journal")
    )  # cold memory: fair to hpm
    df = d.run()
    print(
        f"\n== legacy vs hpm: credit data subsampled to {rows:,} rows (stratified), seed {seed}, same cached teachers"
    )
    print(f"teachers (OOF x{d.spec.teacher_folds} + final, 3 models): {d.timings['teachers']:.1f} s, not counted below")
    out = {}
    for m in ("legacy", "hpm"):
        part = df[df.method == m]
        auc, twin = _best_auc(d, m)
        out[m] = (d.timings[m], int(part.n_fits.sum()), auc)
        print(
            f"{m:7s}: {d.timings[m]:7.1f} s, {int(part.n_fits.sum()):4d} fits, "
            f"{int(part.stage.isin(('full', 'screen', 'chain')).sum()):3d} configs, best test AUC {auc:.4f} (twin {twin:.4f})"
        )
    laps = {k[4:]: v for k, v in d.timings.items() if k.startswith("hpm ")}
    print(
        "hpm phases (each from the previous phase's end; they overlap): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in laps.items())
    )
    (lt, lf, la), (ht, hf, ha) = out["legacy"], out["hpm"]
    print(
        f"hpm speed-up {lt / ht:.1f}x (target >= 8x), fits {lf / hf:.1f}x fewer, "
        f"AUC hpm - legacy = {ha - la:+.4f} (target >= -0.002)"
    )


def _reach_table(title: str, ref, new, trials: int, early: int) -> tuple[float, float]:
    """Per config: trials ``new`` needs to reach ``ref``'s best validation score, and both bests after ``early``
    trials. Returns the mean per-study ratio (the Done-when's measure) and the pooled ratio (sum over sum: not
    dominated by studies whose reference best came at trial 1 or 2)."""
    from hpm_ray.distill.evaluate import better
    from hpm_ray.distill.selection import trials_to_reach

    print(title)
    ref_by = {r["task"].key: r for r in ref.records if r["status"] == "ok" and r["task"].stage in ("full", "twin")}
    ratios, wins, n_refs, n_news = [], [], [], []
    for r in new.records:
        c = ref_by.get(r["task"].key)
        if r["status"] != "ok" or c is None:
            continue
        target = c["val_score"]
        n_ref = trials_to_reach(c["history"], target, ref.metric)
        n_new = trials_to_reach(r["history"], target, ref.metric)
        hib = better(ref.metric, 1.0, 0.0)
        pick = max if hib else min
        e_ref, e_new = pick(c["history"][:early]), pick(r["history"][:early])
        wins.append(e_new >= e_ref if hib else e_new <= e_ref)
        print(
            f"  {r['task'].stage:5s} {r['task'].student:7s}: best {target:.4f} reached at trial {n_ref} vs "
            f"{n_new if n_new is not None else f'>{trials}'}; best after {early} trials {e_ref:.4f} vs {e_new:.4f}"
        )
        n_refs.append(n_ref)
        n_news.append(n_new or trials + 1)
        ratios.append(n_news[-1] / n_ref)
    pooled = sum(n_news) / sum(n_refs)
    print(
        f"  mean trials-to-reach ratio {np.mean(ratios):.2f}, pooled {pooled:.2f} (sum {sum(n_news)} / {sum(n_refs)}); "
        f"after {early} trials the second is at least as good in {sum(wins)}/{len(wins)} studies"
    )
    return float(np.mean(ratios)), pooled


def bench_memory(X, y, rows: int, trials: int, pairs: list[tuple[int, int]], similar_rows: int, early: int = 3):
    """Per seed pair (a, b), one fresh memory: run 1 (seed a) fills it; run 2 (same data) starts warm; on similar
    data (seed b: other rows and split, ``similar_rows`` rows) a cold run and a warm run are compared."""
    from hpm_ray.distill.auto import AutoDistiller
    from hpm_ray.distill.interpretable import t_interval

    kw = dict(
        method="hpm",
        hpm_trials=trials,
        chain=False,
        adaptive_temperature=False,
        temperatures=[2.0],
        alphas=[0.7],
        progress=False,
    )
    out = []
    for a, b in pairs:
        mem = os.path.join(tempfile.mkdtemp(), "memory.journal")
        first = AutoDistiller(X, y, seed=a, max_rows=rows, memory_path=mem, **kw)
        first.run()
        second = AutoDistiller(X, y, seed=a, max_rows=rows, memory_path=mem, **kw)
        second.run()
        print(f"\n== shared memory, seeds {a} -> {b} ({trials} trials per study; stored parameters fill at most half)")
        same = _reach_table(
            f"same data ({rows:,} rows): run 1 (empty memory) vs run 2 (warm)", first, second, trials, early
        )
        cold = AutoDistiller(X, y, seed=b, max_rows=similar_rows, shared_memory=False, **kw)
        cold.run()
        warm = AutoDistiller(X, y, seed=b, max_rows=similar_rows, memory_path=mem, **kw)
        warm.run()
        title = f"similar data (seed {b}: other rows and split, {similar_rows:,} rows): cold vs warm"
        out.append(same + _reach_table(title, cold, warm, trials, early))
    if len(out) > 1:
        print(f"\n== shared memory over {len(out)} seed pairs: mean and 95 % t-interval of the per-pair ratios")
        for i, what in enumerate(
            ("same data, mean", "same data, pooled", "similar data, mean", "similar data, pooled")
        ):
            m, lo, hi = t_interval([o[i] for o in out])
            print(f"  {what:20s} {m:.2f} [{lo:.2f}, {hi:.2f}]  per pair: {', '.join(f'{o[i]:.2f}' for o in out)}")


def bench_quality(X, y, seeds: list[int], rows: int | None) -> None:
    from hpm_ray.distill.auto import AutoDistiller

    print(f"\n== quality: hpm on credit data ({rows or len(y):,} rows), default spec, students <= 100 trees")
    res = []
    for s in seeds:
        d = AutoDistiller(
            X, y, method="hpm", seed=s, max_rows=rows, memory_path=os.path.join(tempfile.mkdtemp(), "memory.journal")
        )
        d.run()
        sm = d.summary()
        t, b, tw = sm["teacher"]["auc"], sm["best"], sm["hard_label_twin"]["auc"]
        res.append((t, b["auc"], tw))
        print(
            f"seed {s}: teacher AUC {t:.4f}, best {b['student']} (T={b['temperature']:g}, a={b['alpha']:g}, "
            f"size {int(d.results_.loc[d._best_index(), 'size'])}) AUC {b['auc']:.4f} = {b['auc'] / t:.2%} of teacher, "
            f"twin {tw:.4f}; {sm['n_fits']} fits, {d.timings['hpm']:.0f} s (teachers {d.timings['teachers']:.0f} s)"
        )
    t, b, tw = np.mean(res, axis=0)
    print(
        f"mean: teacher {t:.4f}, student {b:.4f} ({b / t:.2%} of teacher, target >= 99%), twin {tw:.4f} "
        f"(student - twin {b - tw:+.4f}, target >= 0)"
    )


def bench_calibration(X, y, rows: int | None) -> None:
    from hpm_ray.distill.auto import AutoDistiller
    from hpm_ray.metrics import expected_calibration_error as ece
    from hpm_ray.metrics import roc_auc

    d = AutoDistiller(
        X,
        y,
        method="legacy",
        students=["lgbm"],
        temperatures=[0.5, 1.0, 3.0],
        alphas=[0.9],
        legacy_trials=10,
        max_rows=rows,
        progress=False,
    )
    d.run()
    sp = d.splits
    print(
        f"\n== calibration: lgbm student, alpha 0.9, 10 trials per T, credit data ({rows or len(y):,} rows); "
        f"validation base rate {sp.y_val.mean():.3f}, test base rate {sp.y_test.mean():.3f}"
    )
    print("T    | raw mean P | served mean P | raw ECE | served ECE | calibrator  | test AUC raw / served")
    ok = [r for r in d.records if r["status"] == "ok"]
    for r in sorted(ok, key=lambda r: (r["task"].stage, r["task"].temperature, r["task"].key)):
        raw, served = r["model"].predict_proba(sp.X_test), r["calibrated"].predict_proba(sp.X_test)
        name = "twin" if r["task"].stage == "twin" else f"{r['task'].temperature:g}"
        print(
            f"{name:4} | {raw[:, 1].mean():10.3f} | {served[:, 1].mean():13.3f} | {ece(sp.y_test, raw):7.4f} | "
            f"{ece(sp.y_test, served):10.4f} | {r['calibration']:11} | {roc_auc(sp.y_test, raw):.4f} / "
            f"{roc_auc(sp.y_test, served):.4f}"
        )


# component, the spec change that switches it (augment is off by default: its row switches it on), its claim
ABLATIONS = (
    ("adaptive_selection", {"adaptive_selection": False}, "cheap screening picks the configs worth full budget"),
    ("adaptive_temperature", {"adaptive_temperature": False}, "keeps the temperatures each student can represent"),
    ("shared_memory", {"shared_memory": False}, "configs warm-start from each other's best parameters"),
    ("chain", {"chain": False}, "a student learns from the previous, simpler stage"),
    ("fusion", {"fusion": "best"}, "validation-weighted teachers beat the best single teacher"),
    ("augment", {"augment": True}, "teacher-labelled synthetic rows (off by default)"),
    ("teacher_tune", {"teacher_tune_trials": 0}, "a LightGBM tuned on validation joins the teacher ensemble"),
)


def bench_ablation(X, y, rows: int | None, seed: int) -> None:
    from hpm_ray.distill.auto import AutoDistiller

    def run(change: dict) -> dict:
        d = AutoDistiller(
            X,
            y,
            method="hpm",
            seed=seed,
            max_rows=rows,
            memory_path=os.path.join(tempfile.mkdtemp(), "memory.journal"),
            progress=False,
            **change,
        )
        d.run()
        sm, i = d.summary(), d._best_index()
        return {
            "val": float(d.results_.loc[i, "val_score"]),
            "auc": sm["best"]["auc"],
            "ece": sm["best"]["ece"],
            "student": sm["best"]["student"],
            "fits": sm["n_fits"],
            "wall": d.timings["hpm"],  # students only: the first run also trained the (then cached) teachers
            "metric": d.metric,
        }

    base = run({})
    print(
        f"\n== ablation: hpm on credit data ({rows or len(y):,} rows, seed {seed}); one run per row, no interval; "
        f"validation {base['metric']} of the validation-best student, test AUC / ECE of that student"
    )
    print(
        "| component | claim | switched | val default -> switched | test AUC default -> switched | "
        "test ECE default -> switched | best student | fits | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, change, claim in ABLATIONS:
        r = run(change)
        switched = ", ".join(f"{k}={v}" for k, v in change.items())
        print(
            f"| {name} | {claim} | {switched} | {base['val']:.4f} -> {r['val']:.4f} | {base['auc']:.4f} -> "
            f"{r['auc']:.4f} ({r['auc'] - base['auc']:+.4f}) | {base['ece']:.4f} -> {r['ece']:.4f} | "
            f"{base['student']} -> {r['student']} | {base['fits']} -> {r['fits']} | {base['wall']:.0f} -> "
            f"{r['wall']:.0f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6000, help="rows for legacy vs hpm and the memory bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--share-mb", type=int, default=200)
    ap.add_argument("--share-tasks", type=int, default=8)
    ap.add_argument("--memory-trials", type=int, default=10)
    ap.add_argument(
        "--memory-seeds", default="1:2", help="seed pairs a:b (same data: a; similar data: b), e.g. 1:2,3:4"
    )
    ap.add_argument("--memory-similar-rows", type=int, default=None, help="rows of the similar data (default --rows)")
    ap.add_argument(
        "--parts",
        default="sharing,compare,memory",
        help="comma-separated: sharing, compare, memory, calibration, ablation",
    )
    ap.add_argument("--quality-seeds", default="", help="e.g. 0,1,2 (runs hpm on the credit data per seed)")
    ap.add_argument("--quality-rows", type=int, default=None)
    ap.add_argument("--calibration-rows", type=int, default=6000, help="0: every row")
    a = ap.parse_args()

    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.runtime import init_ray

    init_ray(num_cpus=2)
    X, y = load_credit_default()
    parts = set(filter(None, a.parts.split(",")))
    if "sharing" in parts:
        bench_sharing(a.share_tasks, a.share_mb)
    if "compare" in parts:
        bench_compare(X, y, a.rows, a.seed)
    if "memory" in parts:
        pairs = [tuple(int(v) for v in p.split(":")) for p in a.memory_seeds.split(",")]
        bench_memory(X, y, a.rows, a.memory_trials, pairs, a.memory_similar_rows or a.rows)
    if "calibration" in parts:
        bench_calibration(X, y, a.calibration_rows or None)
    if "ablation" in parts:
        bench_ablation(X, y, a.rows, a.seed)
    if a.quality_seeds:
        bench_quality(X, y, [int(s) for s in a.quality_seeds.split(",")], a.quality_rows)


if __name__ == "__main__":
    main()
