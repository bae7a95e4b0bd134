"""Aliases on registered models: ``promote`` (gated), ``rollback``, free aliases, and a listing.

``champion`` only moves through :func:`promote` (quality gates first) or :func:`rollback`, so the gates
cannot be bypassed by hand. The chain of past champions is kept as a registered-model tag, which is what
``rollback`` walks back. A refused call writes nothing.

MLflow has no compare-and-set, so a move of ``champion`` checks the alias just before writing it (against the
caller's ``expected`` champion, if given), writes the alias first (what servers follow), reads it back, and
only then the history tag. A history tag left behind by a failed write is reconciled from the alias on the
next move, so ``rollback`` never skips or repeats a champion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hpm_ray.errors import HPMError
from hpm_ray.registry.gates import GateResult, evaluate_gates
from hpm_ray.registry.models import KIND_TAG, version_metrics

CHAMPION = "champion"
HISTORY_TAG = "hpm_ray.champion_history"  # JSON list of versions, oldest first; the last one is the champion


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    kind: str | None
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    gates: str  # "pass" or the failing metrics


def _client(client: MlflowClient | None) -> MlflowClient:
    if client is not None:
        return client
    from hpm_ray.runtime import setup_mlflow

    return MlflowClient(setup_mlflow())


class GatesRefused(HPMError):
    """The quality gates refused a promotion (nothing was written)."""


class ConcurrentChange(HPMError):
    """``champion`` was not (or is no longer) what the caller expected: someone else moved it."""


# What MLflow answers for a name or version that is not there; any other error (the tracking server down, a
# locked database) propagates as it is, so a caller never mistakes an outage for an unknown model.
_NOT_THERE = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _version(client: MlflowClient, name: str, version: str):
    _registered(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in _NOT_THERE:
            raise
        raise HPMError(f"model {name!r} has no version {version!r}") from None


def resolve_version(name: str, ref: str, client: MlflowClient | None = None) -> str:
    """A version number from a version or an alias (``"3"``, ``"champion"``); clear error when unknown."""
    client = _client(client)
    if str(ref).isdigit():
        return str(_version(client, name, str(ref)).version)
    model = _registered(client, name)
    if ref not in model.aliases:
        raise HPMError(f"model {name!r} has no alias {ref!r} (aliases: {sorted(model.aliases) or 'none'})")
    return str(model.aliases[ref])


def _registered(client: MlflowClient, name: str):
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in _NOT_THERE:
            raise
        raise HPMError(f"unknown registered model {name!r}") from None


def _champion_and_history(client: MlflowClient, name: str, expected: str | None) -> tuple[str, list[str]]:
    """The current champion ("" if none) and the chain of champions ending with it; refuses when the champion
    is not ``expected``."""
    model = _registered(client, name)
    current = str(model.aliases.get(CHAMPION, ""))
    if expected is not None and current != str(expected):
        raise ConcurrentChange(f"{name}: champion is v{current or '(none)'}, not v{expected}: changed meanwhile")
    history = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    if current and (not history or history[-1] != current):  # moved without its tag (a failed write, by hand)
        history.append(current)
    return current, history


def _move_champion(client: MlflowClient, name: str, version: str, current: str, history: list[str]) -> None:
    """Alias first, checked just before and read back after; then the history tag."""
    now = str(_registered(client, name).aliases.get(CHAMPION, ""))
    if now != current:
        raise ConcurrentChange(f"{name}: champion moved to v{now or '(none)'} meanwhile; nothing written")
    client.set_registered_model_alias(name, CHAMPION, version)
    now = str(_registered(client, name).aliases.get(CHAMPION, ""))
    if now != version:
        raise ConcurrentChange(f"{name}: champion reads v{now or '(none)'} after writing v{version}: moved meanwhile")
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def check_gates(
    name: str, version: str, gate_overrides: dict | None = None, client: MlflowClient | None = None
) -> GateResult:
    """Evaluate the gates of the version's kind (``gate_overrides``: ``{kind: {metric: {low, high}}}``)."""
    mv = _version(_client(client), name, version)
    kind = (mv.tags or {}).get(KIND_TAG)
    return evaluate_gates(kind, version_metrics(mv), (gate_overrides or {}).get(kind))


def promote(
    name: str,
    version: str,
    gate_overrides: dict | None = None,
    client: MlflowClient | None = None,
    expected: str | None = None,
) -> str:
    """Make ``version`` the champion if its gates hold (and, given ``expected``, if the champion is still that
    version); returns the previous champion ("" if none)."""
    client = _client(client)
    version = str(version)
    result = check_gates(name, version, gate_overrides, client)
    if not result.passed:
        raise GatesRefused(f"{name} v{version} refused by quality gates: {result.summary()}")
    previous, history = _champion_and_history(client, name, expected)
    if previous == version:
        return previous
    _move_champion(client, name, version, previous, history + [version])
    return previous


def rollback(name: str, client: MlflowClient | None = None, expected: str | None = None) -> str:
    """Move ``champion`` back to the previous champion (given ``expected``, only if the champion is still that
    version); returns that version."""
    client = _client(client)
    current, history = _champion_and_history(client, name, expected)
    if len(history) < 2:
        raise HPMError(f"model {name!r} has no previous champion to roll back to")
    _move_champion(client, name, history[-2], current, history[:-1])
    return history[-2]


def set_alias(name: str, alias: str, version: str | None, client: MlflowClient | None = None) -> None:
    """Point ``alias`` at ``version`` (``None`` deletes it); ``champion`` is reserved for promote/rollback."""
    client = _client(client)
    if alias == CHAMPION:
        raise HPMError("'champion' only moves through 'registry promote' (gated) or 'registry rollback'")
    if not alias or not alias.replace("_", "").replace("-", "").isalnum():
        raise HPMError(f"alias {alias!r}: use letters, digits, '-' or '_'")
    if version is None:
        if alias not in _registered(client, name).aliases:
            raise HPMError(f"model {name!r} has no alias {alias!r}")
        client.delete_registered_model_alias(name, alias)
        return
    _version(client, name, str(version))
    client.set_registered_model_alias(name, alias, str(version))


def list_versions(name: str | None = None, client: MlflowClient | None = None) -> list[VersionRow]:
    """Every version (of ``name``, or of every model) with kind, aliases, metrics and gate verdict."""
    client = _client(client)
    models = [_registered(client, name)] if name else client.search_registered_models()
    rows: list[VersionRow] = []
    for model in models:
        by_version: dict[str, list[str]] = {}
        for alias, v in (model.aliases or {}).items():
            by_version.setdefault(str(v), []).append(alias)
        for mv in client.search_model_versions(f"name='{model.name}'"):
            kind = (mv.tags or {}).get(KIND_TAG)
            metrics = version_metrics(mv)
            try:
                verdict = evaluate_gates(kind, metrics)
                gates = "pass" if verdict.passed else verdict.summary()
            except HPMError as exc:
                gates = str(exc)
            rows.append(
                VersionRow(
                    model.name,
                    str(mv.version),
                    kind,
                    tuple(sorted(by_version.get(str(mv.version), []))),
                    metrics,
                    gates,
                )
            )
    return sorted(rows, key=lambda r: (r.name, int(r.version)))
