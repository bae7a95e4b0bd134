"""Every student type by name: the built-in students, the constrained presets, and those users register.

Above both :mod:`~hpm_ray.distill.students` and :mod:`~hpm_ray.distill.presets`, so the presets can subclass
the built-ins while specs, the CLI and the engine still find all of them in one place.
"""

from __future__ import annotations

from typing import Any

from hpm_ray.distill.ebm import EBMStudent
from hpm_ray.distill.presets import PRESETS
from hpm_ray.distill.students import BUILTIN, SoftStudent
from hpm_ray.errors import SpecError

STUDENTS: dict[str, type[SoftStudent]] = {}


def register_student(cls: type[SoftStudent]) -> type[SoftStudent]:
    """Make a student type available by its ``name`` in specs and the CLI."""
    if not cls.name:
        raise SpecError(f"student class {cls.__name__} has no name")
    STUDENTS[cls.name] = cls
    return cls


for _cls in (*BUILTIN, *PRESETS, EBMStudent):
    register_student(_cls)

# simple -> complex, the progressive chain's order (the constrained presets sit next to their full-size kin)
COMPLEXITY_ORDER = ("scorecard", "logreg", "tree4", "tree", "ebm", "gbm20", "lgbm", "xgb")


def check_available(name: str) -> None:
    """Raise a one-line :class:`SpecError` when ``name`` is unknown or its optional package is not installed."""
    import importlib.util

    if name not in STUDENTS:
        raise SpecError(f"unknown student {name!r}; known: {', '.join(sorted(STUDENTS))}")
    pkg = STUDENTS[name].requires
    if pkg is not None and importlib.util.find_spec(pkg.module) is None:
        raise SpecError(
            f"student {name!r} needs the optional package {pkg.distribution}: "
            f"pip install 'hpm-ray[{pkg.extra}]' (or '{pkg.distribution}{pkg.bounds}')"
        )


def make_student(name: str, params: dict[str, Any] | None = None, seed: int = 0) -> SoftStudent:
    check_available(name)
    return STUDENTS[name](**(params or {}), random_state=seed)
