"""``hpm-ray registry list|promote|rollback|alias``: aliases on MLflow registered models, gates first."""

from __future__ import annotations

import argparse

from hpm_ray.errors import SpecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("registry", help="list models, promote (quality-gated), roll back, set aliases")
    rs = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True, parser_class=type(p))
    ls = rs.add_parser("list", help="versions with aliases, metrics and gate verdicts")
    ls.add_argument("name", nargs="?", help="one registered model (default: all)")
    ls.set_defaults(func=_list)
    pr = rs.add_parser("promote", help="make a version 'champion' if it passes the quality gates")
    pr.add_argument("name")
    pr.add_argument("version")
    pr.add_argument("--gates", help="YAML {kind: {metric: {low: .., high: ..}}} overriding the default gates")
    pr.add_argument("--expect", metavar="VERSION", help="refuse unless 'champion' is this version now")
    pr.set_defaults(func=_promote)
    rb = rs.add_parser("rollback", help="move 'champion' back to the previous champion")
    rb.add_argument("name")
    rb.add_argument("--expect", metavar="VERSION", help="refuse unless 'champion' is this version now")
    rb.set_defaults(func=_rollback)
    al = rs.add_parser("alias", help="point an alias (not 'champion') at a version, or --delete it")
    al.add_argument("name")
    al.add_argument("alias")
    al.add_argument("version", nargs="?")
    al.add_argument("--delete", action="store_true")
    al.set_defaults(func=_alias)


def _list(args) -> int:
    from hpm_ray.registry.aliases import list_versions

    rows = list_versions(args.name)
    if not rows:
        print("no registered models")
        return 0
    for r in rows:
        metrics = " ".join(f"{k}={v:.3f}" for k, v in sorted(r.metrics.items()))
        aliases = ",".join(r.aliases) or "-"
        print(f"{r.name} v{r.version} [{r.kind or '?'}] aliases={aliases} gates={r.gates} {metrics}")
    return 0


def _promote(args) -> int:
    from hpm_ray.registry.aliases import promote
    from hpm_ray.registry.gates import load_gate_file

    previous = promote(
        args.name, args.version, load_gate_file(args.gates) if args.gates else None, expected=args.expect
    )
    print(f"{args.name}: champion -> v{args.version}" + (f" (was v{previous})" if previous else ""))
    return 0


def _rollback(args) -> int:
    from hpm_ray.registry.aliases import rollback

    print(f"{args.name}: champion -> v{rollback(args.name, expected=args.expect)} (rolled back)")
    return 0


def _alias(args) -> int:
    from hpm_ray.registry.aliases import set_alias

    if args.delete == (args.version is not None):
        raise SpecError("give either a VERSION or --delete")
    set_alias(args.name, args.alias, None if args.delete else args.version)
    print(f"{args.name}: {args.alias} -> " + ("deleted" if args.delete else f"v{args.version}"))
    return 0
