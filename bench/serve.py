"""Serving latency and throughput, one run, same LightGBM model everywhere.

(a) one Serve deployment (FastAPI ingress, same payload parsing and batched model as the router),
(b) the A/B router in both placements (fast path; one deployment per variant), 90/10 over two versions
of the same model, (c) plain FastAPI + uvicorn in its own process, no Ray.
(a) and (b) are measured twice: through Serve's HTTP proxy (the default) and on the ingress replica's own
port (direct ingress, ``hpm-ray serve --direct-ingress``; Ray here starts with it on, which leaves the proxy
path as it is). For 1-row and 100-row requests: p50/p99 latency with one client, throughput with --clients
concurrent clients, and meanwhile the serving process's CPU per request (Linux; (a), the fast path and (c): the
deployments placement spreads over several processes). Loopback only. Usage: ``python bench/serve.py [--requests
400] [--clients 16] [--rounds 3]``.
"""

# No "from __future__ import annotations": FastAPI must see the real Request type.

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PORT_PLAIN_ARG = "--plain-server"


def plain_server(port: int, uri: str, tracking: str) -> None:
    """(c): FastAPI + uvicorn, one process, the same parsing, model call and response as the router, no Ray."""
    import mlflow
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from hpm_ray.serving.models import input_spec, validated_predict
    from hpm_ray.serving.schemas import PayloadError, parse_payload, records

    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    model = mlflow.pyfunc.load_model(uri)
    spec = input_spec(model.metadata, model)
    run = validated_predict(model)
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        try:
            frame = parse_payload(await request.body(), spec).frame
        except PayloadError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return JSONResponse({"predictions": records(run(frame))})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, body: bytes, timeout: float = 120) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.post(url, data=body, timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a first call still loading
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) from ``/proc``; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replica_pid(app: str) -> int | None:
    """The process of ``app``'s ingress replica (one replica): Ray titles it ``ray::ServeReplica:<app>:<class>``."""
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return next((int(line.split()[0]) for line in ps.splitlines() if f"ServeReplica:{app}:" in line), None)


def measure(url: str, body: bytes, n: int, clients: int, pid: int | None = None) -> dict:
    """p50/p99 with one client (n/2 requests), then throughput with ``clients`` concurrent clients (n requests)
    and the CPU per request of the serving process ``pid`` meanwhile (throughput on a shared machine moves with
    the load; the CPU a request costs much less)."""
    import requests

    s = requests.Session()
    for _ in range(20):
        s.post(url, data=body, timeout=30)
    lat = []
    for _ in range(n // 2):
        t = time.perf_counter()
        r = s.post(url, data=body, timeout=30)
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
    sessions = [requests.Session() for _ in range(clients)]

    def worker(i):
        ss = sessions[i]
        for _ in range(n // clients):
            assert ss.post(url, data=body, timeout=60).status_code == 200

    t, cpu = time.perf_counter(), process_cpu_s(pid)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - t
    done = (n // clients) * clients
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "rps": done / wall,
        "cpu_ms": np.nan if cpu is None else (process_cpu_s(pid) - cpu) * 1000 / done,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("HPM_RAY_RUNS_DIR", tempfile.mkdtemp(prefix="hpm-bench-serve-"))

    import lightgbm as lgb
    import mlflow
    from ray import serve

    from hpm_ray.data.datasets import load_credit_default
    from hpm_ray.registry.gates import classifier_metrics
    from hpm_ray.registry.models import log_and_register
    from hpm_ray.registry.pyfunc import ClassifierPyfunc
    from hpm_ray.runtime import init_ray, mlflow_experiment, tracking_uri
    from hpm_ray.serving import ingress, start_ab, stop

    X, y = load_credit_default()
    model = lgb.LGBMClassifier(n_estimators=100, verbose=-1).fit(X.iloc[:5000], y.iloc[:5000])
    metrics = classifier_metrics(y.iloc[5000:6000], model.predict_proba(X.iloc[5000:6000]), model.classes_)
    exp = mlflow_experiment("bench-serve")
    name = "bench-serve-clf"
    versions = []
    for _ in range(2):  # two versions of the same model: the A/B split costs the same on both sides
        with mlflow.start_run(experiment_id=exp):
            versions.append(
                str(
                    log_and_register(
                        ClassifierPyfunc(model, X), name, "classifier", metrics, input_example=X.iloc[:3]
                    ).version
                )
            )
    bodies = {
        n: json.dumps(
            {"dataframe_split": {"columns": list(X.columns), "data": X.iloc[6000 : 6000 + n].to_numpy().tolist()}}
        ).encode()
        for n in (1, 100)
    }

    os.environ[ingress.ENV] = "1"  # before Ray starts: Serve reads it from the instance's environment
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")  # quick shutdown at the end
    init_ray(num_cpus=2)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    # Everything is up at once and measured in interleaved rounds (median over rounds), so a noisy,
    # shared machine slows every target alike instead of whichever happened to run during a spike.
    serve.run(single_app(name, versions[0], tracking_uri()), name="bench-single", route_prefix="/single")
    targets = {"(a) one Serve deployment": base + "/single/predict"}
    for placement in ("fast_path", "deployments"):
        url = start_ab(
            name,
            versions[0],
            versions[1],
            {"champion": 90, "challenger": 10},
            port=port,
            app_name=f"bench-{placement}",
            route_prefix=f"/{placement}",
            placement=placement,
            resume=False,
        )
        targets[f"(b) A/B router {placement}"] = url + "/predict"
    pids: dict[str, int | None] = {}  # the process whose CPU a target's requests cost (the replica, not the proxy)
    for label, app in (
        ("(a) one Serve deployment", "bench-single"),
        ("(b) A/B router fast_path", "bench-fast_path"),
        ("(b) A/B router deployments", "bench-deployments"),
    ):
        targets[f"{label} direct"] = ingress.replica_urls(app, "127.0.0.1")[0] + "/predict"
        if app != "bench-deployments":  # its variants answer in other processes
            pids[label] = pids[f"{label} direct"] = replica_pid(app)
    pport = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, PORT_PLAIN_ARG, str(pport), f"models:/{name}/{versions[0]}", tracking_uri()]
    )
    targets["(c) plain FastAPI+uvicorn"] = f"http://127.0.0.1:{pport}/predict"
    pids["(c) plain FastAPI+uvicorn"] = proc.pid
    rounds: dict[str, list[dict]] = {}
    try:
        for url in targets.values():
            for body in bodies.values():
                wait_up(url, body)
        print(
            f"model: LightGBM 100 trees, 23 features; per round and target: {args.requests // 2} sequential + "
            f"{args.requests} concurrent requests ({args.clients} clients); median of {args.rounds} rounds"
        )
        for _ in range(args.rounds):
            for label, url in targets.items():
                for n, body in bodies.items():
                    rounds.setdefault(f"{label}|{n}", []).append(
                        measure(url, body, args.requests, args.clients, pids.get(label))
                    )
    finally:
        proc.terminate()
        proc.wait(10)
        for placement in ("fast_path", "deployments"):
            stop(f"bench-{placement}")
        serve.shutdown()
    results = {
        k: {m: float(np.median([r[m] for r in v])) for m in ("p50", "p99", "rps", "cpu_ms")} for k, v in rounds.items()
    }
    for key, r in results.items():
        label, n = key.split("|")
        n = int(n)
        print(
            f"  {label:<35} {n:>3} rows  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  {r['rps']:7.1f} req/s  "
            f"{r['rps'] * n:9.0f} rows/s  server CPU {r['cpu_ms']:4.1f} ms/req"
        )

    def ratio(a: str, b: str, key: str) -> float:
        return results[a][key] / results[b][key]

    fp1 = ratio("(b) A/B router fast_path|1", "(a) one Serve deployment|1", "p50")
    dp1 = ratio("(b) A/B router deployments|1", "(a) one Serve deployment|1", "p50")
    fpd = ratio("(b) A/B router fast_path direct|1", "(a) one Serve deployment direct|1", "p50")
    print(
        f"fast-path router p50 / one deployment p50 (1 row): {fp1:.2f}x through the proxy, {fpd:.2f}x direct "
        f"(target <= 1.2x) {'OK' if max(fp1, fpd) <= 1.2 else 'MISSED'}"
    )
    print(f"deployments router p50 / one deployment p50 (1 row): {dp1:.2f}x")
    for path in ("", " direct"):
        tp_fast = ratio(f"(b) A/B router fast_path{path}|100", "(c) plain FastAPI+uvicorn|100", "rps")
        tp_single = ratio(f"(a) one Serve deployment{path}|100", "(c) plain FastAPI+uvicorn|100", "rps")
        print(
            f"100-row rows/s {'through the proxy' if not path else 'direct ingress'}: Serve fast path / plain FastAPI "
            f"{tp_fast:.2f}x; one deployment / plain {tp_single:.2f}x (target >= 0.8x) {'OK' if tp_fast >= 0.8 else 'MISSED'}"
        )
    cpu = {
        k: results[f"{k}|100"]["cpu_ms"] for k in ("(b) A/B router fast_path direct", "(a) one Serve deployment direct")
    }
    plain = results["(c) plain FastAPI+uvicorn|100"]["cpu_ms"]
    print(
        f"server CPU per 100-row request under {args.clients} clients: fast path {cpu['(b) A/B router fast_path direct']:.2f} "
        f"ms, one deployment {cpu['(a) one Serve deployment direct']:.2f} ms, plain {plain:.2f} ms (replica process, "
        "direct ingress; the fast path's includes its prediction log and metrics threads)"
    )
    return 0


def single_app(name: str, version: str, tracking: str):
    """(a): one deployment with the router's parsing, batched model and response, no A/B logic."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve

    from hpm_ray.serving.models import ModelPool
    from hpm_ray.serving.schemas import PayloadError, parse_payload, records

    api = FastAPI()

    @serve.deployment(max_ongoing_requests=200, ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Single:
        def __init__(self):
            self.pool = ModelPool(name, tracking, 32, 0.002)
            self.spec = self.pool.load(version)

        @api.post("/predict")
        async def predict(self, request: Request):
            try:
                frame = parse_payload(await request.body(), self.spec).frame
            except PayloadError as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            out = await self.pool.predict(version, frame)
            return JSONResponse({"predictions": records(out)})

    return Single.bind()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == PORT_PLAIN_ARG:
        plain_server(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(main())
