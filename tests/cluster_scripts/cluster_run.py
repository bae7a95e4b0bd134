"""Run one hpm-ray CLI command against a multi-node Ray cluster on this machine; print a JSON report.

A multi-node cluster cannot live in the pytest process (it already runs the session's local Ray), so tests and
``bench/scale.py`` start this script. It builds a head plus ``--workers`` worker nodes with ``--cpus`` CPUs each
(``ray.cluster_utils.Cluster``: separate raylets and object stores), runs the command given after ``--`` with
``--address <gcs>`` appended (RAY_AUTH_MODE left unset: hpm-ray must find the token itself), and can remove a
worker node when a line of the command's output matches ``--kill-on`` (a regex). The report names the nodes,
the killed one, and every task attempt Ray recorded (state API), so callers can check placement and retries.

usage: cluster_run.py [--workers N] [--cpus C] [--kill-on REGEX] -- hpm-ray-args... [-- hpm-ray-args...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time


def _pump(stream, sink, pattern, fire) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
        if pattern is not None and pattern.search(line):
            fire()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--kill-on", default=None)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    commands: list[list[str]] = [[]]
    for c in args.cmd:
        if c == "--":
            if commands[-1]:
                commands.append([])
        else:
            commands[-1].append(c)

    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("RAY_AUTH_MODE", None)
    import ray
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )
    from ray.cluster_utils import Cluster

    # What `ray.init()` / `ray start --head` do for a new cluster (Cluster() skips it): token auth, token file.
    enable_token_auth_by_default()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    t0 = time.time()
    cluster = Cluster(initialize_head=False)
    proc = None
    lock = threading.Lock()
    pattern = re.compile(args.kill_on) if args.kill_on else None
    try:
        cluster.add_node(num_cpus=args.cpus, include_dashboard=True)  # the head; the dashboard serves the state API
        workers = [cluster.add_node(num_cpus=args.cpus) for _ in range(args.workers)]
        cluster.wait_for_nodes()
        startup = time.time() - t0
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        report: dict = {"startup_s": round(startup, 1), "address": cluster.address,
                        "head": cluster.head_node.node_id, "workers": [w.node_id for w in workers], "killed": None}
        env = dict(os.environ)
        env.pop("RAY_AUTH_MODE", None)
        report["runs"] = []
        for cmd in commands:
            t1 = time.time()

            def kill_worker() -> None:
                with lock:
                    if report["killed"] is None:
                        victim, running = _busy_worker(workers)
                        report.update(killed=victim.node_id, killed_at_s=round(time.time() - t1, 1),
                                      running_on_killed=running)
                        cluster.remove_node(victim, allow_graceful=False)

            proc = subprocess.Popen([sys.executable, "-m", "hpm_ray", *cmd, "--address", cluster.address], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            out, err = [], []
            pumps = [threading.Thread(target=_pump, args=(proc.stdout, out, pattern, kill_worker), daemon=True),
                     threading.Thread(target=_pump, args=(proc.stderr, err, pattern, kill_worker), daemon=True)]
            for p in pumps:
                p.start()
            rc = proc.wait(timeout=args.timeout)
            for p in pumps:
                p.join(timeout=5)
            report["runs"].append(dict(command=cmd[0], returncode=rc, run_s=round(time.time() - t1, 1),
                                       stdout="".join(out)[-3000:], stderr="".join(err)[-3000:]))
        report["tasks"] = _task_attempts()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        ray.shutdown()
        cluster.shutdown()
    print("CLUSTER-REPORT " + json.dumps(report))
    return 0


def _busy_worker(workers, wait_s: float = 30.0):
    """A worker node that is executing a distillation fit or a Tune trial right now, and what it runs.

    Ray titles a worker process ``ray::<task or actor method>`` while it executes and ``ray::IDLE`` otherwise;
    reading the titles under each node's raylet is exact, where the state API lags by about a second.
    """
    import psutil

    busy = re.compile(r"^ray::(run_config|_fold_task|ImplicitFunc|\S*-h\d+(\.train)?$)")  # fits, Tune trials
    deadline = time.time() + wait_s
    while time.time() < deadline:
        for node in workers:
            raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
            names = []
            for child in raylet.children(recursive=True):
                try:
                    title = " ".join(child.cmdline())
                except psutil.Error:
                    continue
                if busy.match(title):
                    names.append(title.split()[0].removeprefix("ray::"))
            if names:
                return node, sorted(set(names))
        time.sleep(0.05)
    return workers[-1], []


def _task_attempts() -> list[dict]:
    """Every task attempt the cluster recorded: name, node, attempt number, state (Ray's state API)."""
    from ray.util.state import list_tasks

    rows = list_tasks(limit=10_000, detail=True, raise_on_missing_output=False)
    return [{"name": t.name, "node_id": t.node_id, "attempt": t.attempt_number, "state": t.state,
             "task_id": t.task_id} for t in rows]


if __name__ == "__main__":
    sys.exit(main())
