"""Bring up ``tests/fake_cluster.yaml`` with Ray's fake multi-node provider and run one hpm-ray CLI command on it.

``ray up`` with this provider fails in Ray 2.60 (a defaults file is missing from the wheel), so this starts the
head the way Ray's own docs do for local autoscaler testing: ``RAY_FAKE_CLUSTER=1 ray start --head
--autoscaling-config=...``. The autoscaler then launches the ``cpu_worker`` nodes as local raylets. Prints
``FAKE-REPORT <json>``: node ids by node type, the command's output, its return code. Everything started here
is killed by PID at the end (the autoscaler's worker raylets are not children of the head process).

usage: fake_run.py CONFIG -- hpm-ray-args...
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _kill_cluster(head: subprocess.Popen, gcs: str) -> None:
    """SIGKILL the head's process group, then every process that still names this cluster's GCS address."""
    import psutil

    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=10)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if gcs in cmd and proc.pid != os.getpid():
            try:
                proc.kill()
            except psutil.Error:
                pass


def main() -> int:
    config, cmd = Path(sys.argv[1]), [a for a in sys.argv[2:] if a != "--"]
    os.environ["RAY_AUTH_MODE"] = "token"  # before Ray is imported: it reads the mode once
    import ray
    from ray._private.authentication.authentication_token_setup import (
        ensure_token_if_auth_enabled,
    )

    ensure_token_if_auth_enabled(None, create_token_if_missing=True)  # the head and this client share it

    ip = ray._private.services.get_node_ip_address()
    port = _free_port()
    gcs = f"{ip}:{port}"
    cfg = yaml.safe_load(config.read_text())
    cfg["provider"]["gcs_address"] = gcs
    work = Path.cwd() / "fake-cluster"
    work.mkdir(exist_ok=True)
    (work / "fake.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1"}
    env.pop("RAY_ADDRESS", None)
    head_cpus = str(int(cfg["available_node_types"][cfg["head_node_type"]]["resources"].get("CPU", 0)))
    t0 = time.time()
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            f"--num-cpus={head_cpus}",
            "--disable-usage-stats",
            "--include-dashboard=false",
            f"--autoscaling-config={work / 'fake.yaml'}",
            "--block",
        ],
        env=env,
        stdout=open(work / "head.log", "w"),  # noqa: SIM115 - open while the head runs
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    report: dict = {"gcs": gcs}
    try:
        deadline = time.time() + 120
        while True:
            try:
                ray.init(address=gcs, logging_level="ERROR", log_to_driver=False)
                break
            except Exception:
                if time.time() > deadline or head.poll() is not None:
                    raise
                time.sleep(1)
        want = sum(t.get("min_workers", 0) for t in cfg["available_node_types"].values())
        while True:
            alive = [n for n in ray.nodes() if n["Alive"]]
            workers = [n for n in alive if n["Resources"].get("CPU", 0) > 0]
            if len(workers) >= want or time.time() > deadline:
                break
            time.sleep(1)
        report.update(
            up_s=round(time.time() - t0, 1),
            head=ray.get_runtime_context().get_node_id(),
            nodes={n["NodeID"]: {"cpu": n["Resources"].get("CPU", 0), "alive": n["Alive"]} for n in alive},
            workers=[n["NodeID"] for n in workers],
        )
        ray.shutdown()
        run_env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_FAKE_CLUSTER")}
        t1 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "hpm_ray", *cmd, "--address", gcs],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        report.update(
            returncode=proc.returncode,
            run_s=round(time.time() - t1, 1),
            stdout=proc.stdout[-3000:],
            stderr=proc.stderr[-3000:],
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _kill_cluster(head, gcs)
    print("FAKE-REPORT " + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
