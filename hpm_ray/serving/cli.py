"""``hpm-ray serve`` (run the A/B app), ``hpm-ray ab start|status|expand|rollback|promote|revert|feedback`` (talk to
it) and ``hpm-ray ab simulate`` (the rollout test's error rate and power on realistic label streams, offline).

``ab`` commands other than ``simulate`` are HTTP clients of a running app, so they work from any machine that
can reach it; the admin token comes from ``--token`` or ``$HPM_RAY_SERVE_TOKEN``, the feedback token (``ab
feedback``) from ``--token`` or ``$HPM_RAY_FEEDBACK_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hpm_ray.errors import HPMError, SpecError
from hpm_ray.serving.client import DEFAULT_URL, FEEDBACK_TOKEN_ENV, TOKEN_ENV, call

FEEDBACK_CHUNK = 1000  # labels per POST /feedback


def register(sub: argparse._SubParsersAction) -> None:
    from hpm_ray.cli_args import add_runtime_args, port_number, positive_int

    s = sub.add_parser("serve", help="serve a registered model with weighted A/B routing on Ray Serve")
    s.add_argument("--config", default=None, help="Serve config YAML (default: serve/ab.yaml if present)")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=port_number, help="port (default 8000)")
    s.add_argument("--model", help="registered model name (overrides the config)")
    s.add_argument("--champion", help="champion version or alias (default: the config's, else 'champion')")
    s.add_argument("--challenger", help="challenger version or alias (default: the config's, else none)")
    s.add_argument(
        "--placement", choices=("fast_path", "deployments"), help="variants inside the router or one deployment each"
    )
    s.add_argument("--token", help=f"admin bearer token (default ${TOKEN_ENV}; generated and printed if unset)")
    s.add_argument(
        "--direct-ingress",
        action="store_true",
        help="also answer on each router replica's own port, skipping the proxy hop (ports printed at start)",
    )
    add_runtime_args(s)
    s.set_defaults(func=_serve)

    ab = sub.add_parser(
        "ab",
        help="staged rollout on a running A/B app (start, status, expand, rollback, promote, revert); "
        "simulate its test offline",
    )
    actions = ab.add_subparsers(dest="ab_command", metavar="ACTION", required=True, parser_class=type(ab))
    for name, help_text in (
        ("start", "put a challenger version on a share of traffic and start the staged rollout"),
        ("status", "weights, stage, history and per-variant metrics"),
        ("expand", "move the challenger to the next traffic step"),
        ("rollback", "take the challenger off traffic"),
        ("promote", "make the challenger champion (quality gates first)"),
        ("revert", "after a promotion: the previous champion again (the registry's alias too)"),
        ("feedback", "send late labels (CSV: request_id,label) to join their predictions"),
    ):
        p = actions.add_parser(name, help=help_text)
        p.add_argument(
            "--url",
            default=os.environ.get("HPM_RAY_SERVE_URL", DEFAULT_URL),
            help=f"the app's base URL (default {DEFAULT_URL})",
        )
        if name == "feedback":
            p.add_argument(
                "--file",
                required=True,
                help="CSV with columns request_id,label: one line per row of a request, in the request's row order",
            )
            p.add_argument("--token", help=f"feedback bearer token (default ${FEEDBACK_TOKEN_ENV})")
            p.set_defaults(func=_feedback)
            continue
        p.add_argument("--token", help=f"admin bearer token (default ${TOKEN_ENV})")
        if name == "start":
            p.add_argument("--model", required=True, help="registered model name the app serves")
            p.add_argument("--challenger", required=True, help="version (or alias) to roll out")
            p.add_argument(
                "--traffic", type=float, default=10.0, help="challenger's first share in percent (default 10)"
            )
        p.set_defaults(func=_ab)

    sim = actions.add_parser(
        "simulate",
        help="error rate, power and labels to a decision of the rollout's sequential "
        "test, on resampled real per-row losses (no app needed)",
    )
    sim.add_argument(
        "--config", default=None, help="serve config YAML whose rollout.test to use (default: serve/ab.yaml if present)"
    )
    sim.add_argument(
        "--scenario",
        required=True,
        choices=("aa", "better", "worse"),
        help="aa: equal means (false decisions); better/worse: challenger's mean loss changed by --effect",
    )
    sim.add_argument(
        "--effect",
        type=finite_float,
        default=0.02,
        help="relative change of the challenger's mean log loss (default 0.02)",
    )
    sim.add_argument("--paired", action="store_true", help="shadow design: both models score every labelled row")
    sim.add_argument("--label-rate", type=finite_float, default=20.0, help="labelled records per second (default 20)")
    sim.add_argument(
        "--label-delay-s", type=finite_float, default=0.0, help="seconds from prediction to label (default 0)"
    )
    sim.add_argument("--hours", type=finite_float, default=None, help="horizon (default: the test's max_duration_s)")
    sim.add_argument("--runs", type=positive_int, default=2000, help="simulated rollouts (default 2000)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sim.add_argument("--json", action="store_true", help="also print one JSON object on the last line")
    sim.set_defaults(func=_simulate)


def finite_float(text: str) -> float:
    """argparse type for a finite real number, refused in one line otherwise."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _serve_args(path: str | None) -> tuple[dict, dict]:
    """(application args, http options) from a Serve config file (``applications[0].args``) or a flat args file."""
    from hpm_ray.config import read_yaml_mapping

    if path is None:
        default = Path("serve/ab.yaml")
        if not default.is_file():
            return {}, {}
        path = str(default)
    p = Path(path)
    data = read_yaml_mapping(p, "serve config")
    if "applications" not in data:
        return data, {}
    apps = data["applications"]
    if not isinstance(apps, list) or not apps or not isinstance(apps[0], dict):
        raise SpecError(f"{p}: 'applications' must list at least one application")
    args = dict(apps[0].get("args") or {})
    args.setdefault("app_name", apps[0].get("name", "hpm-ab"))
    return args, dict(data.get("http_options") or {})


def _simulate(args: argparse.Namespace) -> int:
    from hpm_ray.config import validate_spec
    from hpm_ray.serving.policy import RolloutPolicy
    from hpm_ray.serving.simulate import simulate

    app_args, _ = _serve_args(args.config)
    source = args.config or "serve/ab.yaml"
    rollout = app_args.get("rollout") or {}
    if not isinstance(rollout, dict):
        raise SpecError(f"{source}: rollout must be a mapping of settings")
    policy = validate_spec(RolloutPolicy, rollout, f"{source} rollout")
    share = app_args.get("challenger_traffic")
    share = policy.steps[0] if share is None else share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 100:
        raise SpecError(f"{source}: challenger_traffic must be a percentage in (0, 100), got {share!r}")
    r = simulate(
        policy.test,
        args.scenario,
        effect=args.effect,
        paired=args.paired,
        challenger_share=share / 100.0,
        label_rate=args.label_rate,
        label_delay_s=args.label_delay_s,
        hours=args.hours,
        runs=args.runs,
        seed=args.seed,
    )
    t = policy.test
    design = "paired (shadow scores every row)" if r.paired else f"unpaired (challenger {share:g}% of labelled rows)"
    print(
        f"scenario {r.scenario}, effect {r.effect:+.1%} on mean log loss, {design}; {r.runs} runs, up to "
        f"{r.max_labels:,} labels ({r.max_labels / args.label_rate / 3600:.2f} h at {args.label_rate:g}/s, delay "
        f"{args.label_delay_s:g} s); alpha {t.alpha:g}, margin {t.margin:g}, optimised for {t.optimise_for:,} labels, "
        f"min {t.min_labels} per variant"
    )
    if t.score != "log_loss":
        print(f"  (the streams are log losses; the configured score is {t.score}: rates carry over only roughly)")
    for name, count in (("promote", r.promote), ("rollback", r.rollback), ("inconclusive", r.inconclusive)):
        lo, hi = r.interval(count)
        print(f"  {name:<13}{count / r.runs:7.1%}  (95% CI {lo:.1%} - {hi:.1%})")
    if r.scenario == "aa":
        lo, hi = r.interval(r.promote + r.rollback)
        print(
            f"  false decisions {(r.promote + r.rollback) / r.runs:.1%} (95% CI {lo:.1%} - {hi:.1%}), alpha {t.alpha:g}"
        )
    if r.median_labels is None:
        print("  no run decided")
    else:
        print(
            f"  median to a decision: {r.median_labels:,.0f} labels, {r.median_hours:.2f} h   (simulated in {r.seconds:.0f} s)"
        )
    if args.json:
        print(json.dumps(r.summary()))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    import signal
    import time

    from ray import serve

    from hpm_ray.runtime import init_ray, require_free_port
    from hpm_ray.serving import ingress
    from hpm_ray.serving.app import build, deploy, new_token, stop

    app_args, http = _serve_args(args.config)
    for key in ("model", "champion", "challenger", "placement", "token"):
        if getattr(args, key):
            app_args[key] = getattr(args, key)
    if not app_args.get("model"):
        raise SpecError("no model to serve: give --model or a config with applications[0].args.model")
    token = app_args.get("token") or os.environ.get(TOKEN_ENV)
    generated = not token
    app_args["token"] = token or new_token()
    host = args.host or http.get("host", "127.0.0.1")
    port = int(args.port or http.get("port", 8000))
    require_free_port(host, port, args.address)
    # (--direct-ingress: hpm_ray.cli.main has put the flag in this process's environment for Serve to read)
    init_ray(args.address, args.num_cpus, args.verbose)
    application, ready = build(app_args)  # resolves versions first: an unknown model or alias fails here, exit 2
    serve.start(http_options={"host": host, "port": port})
    name = app_args.get("app_name", "hpm-ab")
    prefix = app_args.get("route_prefix", "/")
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops as cleanly as Ctrl-C
    try:
        deploy(application, ready, name, prefix)
        urls = ingress.replica_urls(name, host, timeout=10.0) if args.direct_ingress else []
        if args.direct_ingress and not urls:
            raise HPMError(
                f"no router replica got a port of its own within 10 s: direct ingress looks off on this "
                f"Ray cluster (start Ray with {ingress.ENV}=1; a Ray instance hpm-ray starts itself gets "
                "it from --direct-ingress)"
            )
        # flushed: a supervisor reading a pipe needs these lines while the app runs
        print(
            f"serving {app_args['model']} at http://{host}:{port}{prefix.rstrip('/')} (POST /predict, GET /ab/status); "
            "Ctrl-C stops",
            flush=True,
        )
        if urls:
            print("direct ingress, no proxy hop: " + ", ".join(urls), flush=True)
        if generated:
            print(f"admin token (generated; set ${TOKEN_ENV} to choose one): {app_args['token']}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop(name)  # also when the start failed half-way: no app left running behind an error
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    print("stopped")
    return 0


def _interval(iv: list[float] | None) -> str:
    return "" if not iv else f" [{iv[0]:.4f}, {iv[1]:.4f}]"


def format_status(s: dict) -> str:
    lines = [
        f"model {s['model']}  stage {s['stage']}  revision {s['revision']}",
        "variants " + "  ".join(f"{k}=v{v}" for k, v in s["variants"].items() if v),
        "weights  " + "  ".join(f"{k}={w:g}%" for k, w in s["weights"].items()),
        f"policy   {s.get('last_decision', '')}",
    ]
    for name, m in s.get("metrics", {}).items():
        fmt = lambda v, f: "-" if v is None else format(v, f)
        if "latency_p50_ms" not in m:  # the public view (no admin token): counts only
            lines.append(
                f"  {name:<10} v{m['version']} requests={m['requests']} errors={m['errors']} labelled={m['labelled']}"
            )
            continue
        lines.append(
            f"  {name:<10} v{m['version']} requests={m['requests']} errors={m['errors']} p50={fmt(m['latency_p50_ms'], '.1f')}ms "
            f"p99={fmt(m['latency_p99_ms'], '.1f')}ms confidence={fmt(m['mean_confidence'], '.3f')} "
            f"{m['score']}={fmt(m['mean_score'], '.4f')}{_interval(m.get('score_interval'))} "
            f"(labelled {m['labelled']} requests, {m['labelled_rows']} rows)"
        )
    t = s.get("test")
    if t:
        lines.append(
            f"  test: {t['score']} challenger - champion {t['estimate']:+.4f}, {1 - t['alpha']:.0%} confidence "
            f"sequence [{t['lower']:+.4f}, {t['upper']:+.4f}] after {t['n']} {'pairs' if t['paired'] else 'records'}"
            + (" (below 0: the challenger is better)" if t["upper"] < 0 else "")
            + (" (above 0: the challenger is worse)" if t["lower"] > 0 else "")
        )
    for h in s.get("history", [])[-5:]:
        lines.append(f"  event: {h['event']}: {h['detail']}")
    return "\n".join(lines)


def _ab(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if args.ab_command == "status":
        print(format_status(call(args.url, "GET", "/ab/status", token=token)))  # without a token: counts only
        return 0
    if args.ab_command == "start":
        served = call(args.url, "GET", "/healthz")["model"]
        if served != args.model:
            raise HPMError(f"the app at {args.url} serves {served!r}, not {args.model!r}")
        result = call(args.url, "POST", "/ab/start", {"challenger": args.challenger, "traffic": args.traffic}, token)
    else:
        result = call(args.url, "POST", f"/ab/{args.ab_command}", {}, token)
    print(f"{result['event']}: {result['detail']}")
    return 0


def _label_value(text: str):
    """A CSV cell as the JSON value a client would send: an integer, else a number, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_labels(path: str) -> list[dict]:
    """``{"request_id", "labels"}`` per request id of a labels CSV, rows in file order; one-line errors."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise HPMError(f"--file: no such file {path!r}")
    by_id: dict[str, list] = {}
    try:
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"request_id", "label"} - set(reader.fieldnames or ())
            if missing:
                raise HPMError(f"{path}: needs columns request_id,label; missing {', '.join(sorted(missing))}")
            for line, row in enumerate(reader, start=2):
                rid, label = (row.get("request_id") or "").strip(), (row.get("label") or "").strip()
                if not rid or not label:
                    raise HPMError(f"{path}, line {line}: empty request_id or label")
                by_id.setdefault(rid, []).append(_label_value(label))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise HPMError(f"{path}: not a readable CSV ({exc})") from None
    if not by_id:
        raise HPMError(f"{path}: no labels")
    return [{"request_id": rid, "labels": labels} for rid, labels in by_id.items()]


def _feedback(args: argparse.Namespace) -> int:
    """POST the file's labels in chunks; print the count per outcome and the first few refusals."""
    items = read_labels(args.file)
    token = args.token or os.environ.get(FEEDBACK_TOKEN_ENV)
    totals: dict[str, int] = {}
    refused: list[dict] = []
    for i in range(0, len(items), FEEDBACK_CHUNK):
        answer = call(args.url, "POST", "/feedback", items[i : i + FEEDBACK_CHUNK], token)
        for r in answer["results"]:
            totals[r["outcome"]] = totals.get(r["outcome"], 0) + 1
            if r["outcome"] != "joined" and len(refused) < 5:
                refused.append(r)
    print(f"{len(items)} labelled requests: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    for r in refused:
        print(f"  {r['request_id']}: {r['outcome']} ({r['reason']})")
    return 0
