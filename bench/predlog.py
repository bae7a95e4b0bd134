"""Throughput of the A/B prediction log on a local sqlite file (WAL), one process, no Ray.

Appends one-row classifier predictions in batches of ``--batch`` (a router's flush), joins their labels in
batches of ``--label-batch`` (a bulk ``hpm-ray ab feedback``), then reads the labelled scores back the way the
state actor does. Usage: ``python bench/predlog.py [--rows 100000] [--batch 100] [--label-batch 1000]``.
"""

import argparse
import tempfile
import time

from hpm_ray.serving.predlog import Label, Prediction, PredictionLog, new_request_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--label-batch", type=int, default=1000)
    args = ap.parse_args()
    log = PredictionLog(f"sqlite:///{tempfile.mkdtemp()}/predictions.sqlite")
    out = {"classes": ["0", "1"], "proba": [[0.7, 0.3]]}
    ids = [new_request_id() for _ in range(args.rows)]
    t = time.perf_counter()
    for i in range(0, args.rows, args.batch):
        log.append([Prediction(r, "bench", "champion", "1", out) for r in ids[i : i + args.batch]])
    append_s = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, args.rows, args.label_batch):
        results = log.join([Label(r, [1]) for r in ids[i : i + args.label_batch]])
        assert all(r.outcome == "joined" for r in results)
    join_s = time.perf_counter() - t
    t = time.perf_counter()
    read, seq = 0, 0
    while batch := log.scores_since("bench", seq):
        read, seq = read + len(batch), batch[-1].seq
    read_s = time.perf_counter() - t
    assert read == args.rows
    print(
        f"{args.rows:,} one-row predictions: append {args.rows / append_s:,.0f}/s (batches of {args.batch}), "
        f"join {args.rows / join_s:,.0f} labels/s (batches of {args.label_batch}), "
        f"state actor read {read / read_s:,.0f}/s"
    )


if __name__ == "__main__":
    main()
