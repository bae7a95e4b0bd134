"""Where the A/B router's time goes on one /predict, stage by stage, in one process (no HTTP, no Serve).

Each stage runs the router's own code (``ABRouter._record`` on a stand-in replica, the same parser, draw,
model call and answer as ``ABRouter.predict``) on the body ``bench/serve.py`` sends, 1 row and 100 rows,
LightGBM 100 trees on the credit data. Stages are timed alternately in ``--reps`` rounds (median per stage),
so a noisy machine slows them alike. Not in the table: Serve's proxy and ASGI hops, the batch queue's wait
(``batch_wait_timeout_s``, 2 ms by default, for a lone request). What runs off the request path, in the same
process (so it competes for its CPU under load), is shown per request below the table: the prediction log's
batched write, with the served feature rows the drift loop reads (every request at ``served_fraction: 1``), and
the part of it those rows cost (the same batches are also written, without them, to a second log).
Usage: ``python bench/router_profile.py``.
"""

import argparse
import dataclasses
import json
import os
import tempfile
import time
from types import SimpleNamespace

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    os.environ.setdefault("HPM_RAY_RUNS_DIR", tempfile.mkdtemp(prefix="hpm-bench-profile-"))

    import lightgbm as lgb
    import mlflow
    from fastapi.responses import JSONResponse

    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.registry.pyfunc import ClassifierPyfunc
    from hpm_ray.runtime import init_ray, runs_dir
    from hpm_ray.serving.app import ABRouter, ServeSpec
    from hpm_ray.serving.models import input_spec, validated_predict
    from hpm_ray.serving.predlog import PredictionLog, new_request_id
    from hpm_ray.serving.routing import choose
    from hpm_ray.serving.schemas import parse_payload, records

    X, y = load_credit_default()
    model = lgb.LGBMClassifier(n_estimators=100, verbose=-1).fit(X.iloc[:5000], y.iloc[:5000])
    path = str(runs_dir() / "model")
    mlflow.pyfunc.save_model(path, python_model=ClassifierPyfunc(model, X), input_example=X.iloc[:3])
    loaded = mlflow.pyfunc.load_model(path)
    spec, predict = input_spec(loaded.metadata, loaded), validated_predict(loaded)

    init_ray(num_cpus=1)  # the router's metrics are Ray metrics
    from ray.util import metrics

    tags = ("variant",)
    replica = SimpleNamespace(
        spec=ServeSpec(model="m"),
        buffer=[],
        predictions=[],
        m_requests=metrics.Counter("p_requests", "", tag_keys=tags),
        m_errors=metrics.Counter("p_errors", "", tag_keys=tags),
        m_latency=metrics.Histogram("p_latency", "", boundaries=[1, 10, 100], tag_keys=tags),
        m_confidence=metrics.Histogram("p_conf", "", boundaries=[0.5, 0.9], tag_keys=tags),
        _flush=lambda: None,
        pool=SimpleNamespace(matures_s=lambda version: None),  # a classifier: no forecast maturity
    )
    record = ABRouter.func_or_class._record
    plog = PredictionLog(f"sqlite:///{runs_dir() / 'predictions.sqlite'}")
    bare_log = PredictionLog(f"sqlite:///{runs_dir() / 'bare.sqlite'}")  # the same batches without feature rows
    weights = {"champion": 90.0, "challenger": 10.0}

    def profile(n: int) -> None:
        body = json.dumps(
            {"dataframe_split": {"columns": list(X.columns), "data": X.iloc[6000 : 6000 + n].to_numpy().tolist()}}
        ).encode()
        frame = parse_payload(body, spec).frame
        out = predict(frame)
        state = {}

        def parse():
            state["frame"] = parse_payload(body, spec).frame

        def route():
            state["variant"] = choose(weights)
            state["rid"] = new_request_id()

        def model_call():
            state["out"] = predict(frame)

        def rec():
            record(replica, state["rid"], "champion", "1", True, time.perf_counter(), out, features=frame)
            if len(replica.buffer) >= 500:
                replica.buffer.clear()

        def respond():
            answer = {
                "request_id": state["rid"],
                "variant": "champion",
                "model": "m",
                "model_version": "1",
                "predictions": records(out),
            }
            JSONResponse(answer)  # renders the body

        def log_write():  # off the request path: one batch per flush (predictions + served feature rows)
            if len(replica.predictions) >= 100:
                batch, replica.predictions[:] = list(replica.predictions), []
                t = time.perf_counter_ns()
                bare_log.append([dataclasses.replace(r, features=None) for r in batch])  # predictions alone
                t2 = time.perf_counter_ns()
                plog.append(batch)
                logged["n"] += len(batch)
                logged["bare"] += t2 - t
                logged["full"] += time.perf_counter_ns() - t2

        stages = {"parse": parse, "route": route, "model": model_call, "record": rec, "respond": respond}
        times: dict[str, list[float]] = {k: [] for k in stages}
        logged = {"n": 0, "bare": 0, "full": 0}
        for _ in range(args.reps):
            for name, fn in stages.items():
                t = time.perf_counter_ns()
                fn()
                times[name].append(time.perf_counter_ns() - t)
            log_write()
        med = {k: float(np.median(v)) / 1000 for k, v in times.items()}
        total = sum(med.values())
        print(f"\n{n}-row /predict: {total:.0f} us in the router's code (median per stage, {args.reps} reps)")
        print("| stage | us | share |")
        print("|---|---:|---:|")
        for k, v in med.items():
            print(f"| {k} | {v:.0f} | {100 * v / total:.0f} % |")
        if logged["n"]:
            full, alone = logged["full"] / logged["n"] / 1000, logged["bare"] / logged["n"] / 1000
            print(f"| (off path) prediction log write with the served feature rows, per request | {full:.0f} | - |")
            print(
                f"| (off path) of which the served rows (the same write without them: {alone:.0f}) | {full - alone:.0f} | - |"
            )

    for n in (1, 100):
        profile(n)


if __name__ == "__main__":
    main()
