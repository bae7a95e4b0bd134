"""Run one hpm-ray CLI command against a multi-node Ray cluster on this machine; print a JSON report.

A multi-node cluster cannot live in the pytest process (it already runs the session's local Ray), so tests and
``bench/scale.py`` start this script. It builds a head plus ``--workers`` worker nodes with ``--cpus`` CPUs each
(``ray.cluster_utils.Cluster``: separate raylets and object stores), runs the command given after ``--`` with
``--address <gcs>`` appended (RAY_AUTH_MODE left unset: hpm-ray must find the token itself), and can remove a
worker node when a line of the command's output matches ``--kill-on`` (a regex) or, with ``--kill-on-start``, as
soon as it can: the first worker node that runs a process whose title matches ``--busy`` (e.g.
``ray::run_config``) then dies with it. A command whose first word is a ``.py`` file runs that script (with
``--address``) instead of the CLI. The report names the nodes and the killed one; evidence of placement and
retries comes from the runs' own outputs, not from Ray's state API (which needs the dashboard, forgets the task
events of a dead node, and without an address can pick up another Ray instance on the machine).

usage: cluster_run.py [--workers N] [--cpus C] [--kill-on REGEX | --kill-on-start] [--busy REGEX] -- args... [-- ...]
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
    ap.add_argument("--kill-on-start", action="store_true", help="look for a busy worker node from the start")
    ap.add_argument(
        "--busy",
        default=r"^ray::(run_config|ImplicitFunc\.train)\b",
        help="process titles of the work to kill (default: a distillation fit or a Tune trial)",
    )
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
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )
    from ray.cluster_utils import Cluster

    # What `ray.init()` / `ray start --head` do for a new cluster (Cluster() skips it): token auth, token file.
    enable_token_auth_by_default()
    ensure_token_if_auth_enabled(None, create_token_if_missing=True)
    t0 = time.time()
    cluster, workers = _start_cluster(Cluster, args.cpus, args.workers)
    proc = None
    lock = threading.Lock()
    pattern = re.compile(args.kill_on) if args.kill_on else None
    try:
        startup = time.time() - t0
        report: dict = {
            "startup_s": round(startup, 1),
            "address": cluster.address,
            "head": cluster.head_node.node_id,
            "workers": [w.node_id for w in workers],
            "killed": None,
        }
        env = dict(os.environ)
        env.pop("RAY_AUTH_MODE", None)
        report["runs"] = []
        for cmd in commands:
            t1 = time.time()

            def kill_worker(t1: float = t1) -> None:
                with lock:
                    if report["killed"] is None:
                        victim, running = _busy_worker(workers, re.compile(args.busy), args.timeout / 2)
                        report.update(
                            killed=victim.node_id, killed_at_s=round(time.time() - t1, 1), running_on_killed=running
                        )
                        cluster.remove_node(victim, allow_graceful=False)

            entry = [cmd[0]] if cmd[0].endswith(".py") else ["-m", "hpm_ray", cmd[0]]
            proc = subprocess.Popen(
                [sys.executable, *entry, *cmd[1:], "--address", cluster.address],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            out, err = [], []
            pumps = [
                threading.Thread(target=_pump, args=(proc.stdout, out, pattern, kill_worker), daemon=True),
                threading.Thread(target=_pump, args=(proc.stderr, err, pattern, kill_worker), daemon=True),
            ]
            if args.kill_on_start:
                pumps.append(threading.Thread(target=kill_worker, daemon=True))
            for p in pumps:
                p.start()
            rc = proc.wait(timeout=args.timeout)
            for p in pumps:
                p.join(timeout=5)
            report["runs"].append(
                dict(
                    command=cmd[0],
                    returncode=rc,
                    run_s=round(time.time() - t1, 1),
                    stdout="".join(out)[-3000:],
                    stderr="".join(err)[-3000:],
                )
            )
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        cluster.shutdown()
    print("CLUSTER-REPORT " + json.dumps(report))
    return 0


def _start_cluster(cluster_cls, cpus: int, n_workers: int, tries: int = 2):
    """Head plus workers; tried twice because Ray gives a new raylet a fixed 30 s to register, which a machine
    busy with other work can miss."""
    for attempt in range(tries):
        cluster = cluster_cls(initialize_head=False)
        try:
            cluster.add_node(num_cpus=cpus, include_dashboard=False)  # the head (port 8265 may be taken)
            workers = [cluster.add_node(num_cpus=cpus) for _ in range(n_workers)]
            cluster.wait_for_nodes()
            return cluster, workers
        except Exception:
            cluster.shutdown()
            if attempt == tries - 1:
                raise


def _busy_worker(workers, busy: re.Pattern, wait_s: float):
    """The first worker node running a process whose title matches ``busy``, and what it runs.

    Ray titles a worker process ``ray::<task or actor method>`` while it executes and ``ray::IDLE`` otherwise;
    reading the titles under each node's raylet is exact, where the state API lags by about a second.
    """
    import psutil

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


if __name__ == "__main__":
    sys.exit(main())
