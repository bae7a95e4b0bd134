"""Typed experiment specs: one pydantic model per job, loaded from YAML, overridden by CLI flags.

Validation happens here, at the edge, so the code behind a spec can trust it. A spec error becomes a
:class:`~hpm_ray.errors.SpecError` whose message names the file, the field and the problem in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpm_ray.errors import SpecError

S = TypeVar("S", bound="Spec")


class Spec(BaseModel):
    """Base of every spec: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeSpec(Spec):
    """Where work runs: ``address`` None starts a local Ray instance with ``num_cpus`` (None: all cores)."""

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    verbose: bool = False


def _one_line(err: ValidationError) -> str:
    """The first error as ``field: message`` (a check across fields: the message alone, it names them)."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    others = [".".join(str(p) for p in e["loc"]) or "spec" for e in err.errors()[1:]]
    more = f" (also: {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if others else ""
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix to a validator's own message
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"


def load_spec(cls: type[S], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> S:
    """Build ``cls`` from a YAML file (optional) with ``overrides`` on top; ``None`` overrides are ignored.

    A mapping override (``runtime``) is merged key by key into the file's mapping, so a flag changes one setting
    without dropping the rest of that section (or hiding its typos from validation).
    """
    data = read_yaml_mapping(path, "spec file") if path is not None else {}
    source = "spec" if path is None else str(Path(path))
    for k, v in (overrides or {}).items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **{kk: vv for kk, vv in v.items() if vv is not None}}
        elif v is not None:
            data[k] = v
    return validate_spec(cls, data, source)


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: ``{}``); every failure is a one-line SpecError."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{what} not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{p}: not valid YAML{at}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise SpecError(f"{p}: the top level must be a mapping of settings")
    return loaded or {}


def validate_spec(cls: type[S], data: dict[str, Any], source: str = "spec") -> S:
    """Validate ``data`` as ``cls``; a failure is a one-line :class:`SpecError` naming ``source`` and the field."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {_one_line(exc)}") from None


def parse_list(text: str | None, kind: type = float, flag: str = "list") -> list | None:
    """Parse a comma-separated CLI value (``"42,48"``) into a list; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecError(f"{flag}: expected comma-separated {kind.__name__} values, got {text!r}") from None
