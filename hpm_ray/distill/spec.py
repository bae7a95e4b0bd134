"""The distillation spec: every HPM component is a switch here, so its effect can be measured alone."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from hpm_ray.config import RuntimeSpec, Spec

Method = Literal["auto", "legacy", "hpm", "hybrid"]
SelectionMetric = Literal["auto", "ks", "log_loss", "auc", "accuracy", "f1"]


def check_students(names: list[str]) -> list[str]:
    """Every name is a registered student type whose packages are installed (and there is at least one)."""
    from hpm_ray.distill.catalog import STUDENTS, check_available
    from hpm_ray.errors import SpecError

    if not names:
        raise SpecError(f"no student given; known: {', '.join(sorted(STUDENTS))}")
    for n in names:
        check_available(n)
    return names


def check_temperatures(v: list[float]) -> list[float]:
    if not v:
        raise ValueError("at least one temperature is needed")
    bad = [t for t in v if not t > 0]
    if bad:
        raise ValueError(f"temperature must be > 0, got {bad[0]}")
    return v


def check_alphas(v: list[float], allow_zero: bool = True) -> list[float]:
    """Alphas in [0, 1]; ``allow_zero=False`` where alpha = 0 would only repeat the hard-label twin."""
    if not v:
        raise ValueError("at least one alpha is needed")
    bad = [a for a in v if not (0.0 <= a <= 1.0) or (a == 0.0 and not allow_zero)]
    if bad:
        raise ValueError(f"alpha must be in {'[' if allow_zero else '('}0, 1], got {bad[0]}")
    return v


# Field types that carry their check: a spec declares ``students: StudentNames`` instead of writing a validator.
StudentNames = Annotated[list[str], AfterValidator(check_students)]
StudentName = Annotated[str, AfterValidator(lambda v: check_students([v])[0])]
Alphas = Annotated[list[float], AfterValidator(check_alphas)]
SoftAlphas = Annotated[list[float], AfterValidator(partial(check_alphas, allow_zero=False))]  # 0 is the twin


class SplitTeacherSpec(Spec):
    """What every distillation experiment shares: temperatures, how the data is split, the default teacher."""

    temperatures: list[float]  # each experiment sets its own default
    validation_size: float = Field(0.2, gt=0.0, lt=0.5)
    test_size: float = Field(0.2, gt=0.0, lt=0.5)
    max_rows: int | None = Field(None, ge=200)  # stratified subsample before splitting (benchmarks on 2 cores)
    # default teacher ensemble
    teacher_trees: int = Field(300, ge=10)
    teacher_folds: int = Field(5, ge=2)
    # a LightGBM tuned on validation joins the ensemble (Optuna trials, each early-stopped; 0: no tuned member)
    teacher_tune_trials: int = Field(30, ge=0)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)

    @field_validator("temperatures")
    @classmethod
    def _positive_t(cls, v: list[float]) -> list[float]:
        return check_temperatures(v)


class DistillSpec(SplitTeacherSpec):
    method: Method = "auto"
    students: StudentNames = Field(default_factory=lambda: ["logreg", "tree", "lgbm", "xgb"])
    temperatures: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 3.0])
    alphas: Alphas = Field(default_factory=lambda: [0.3, 0.5, 0.7, 0.9])
    selection_metric: SelectionMetric = "auto"  # auto: validation KS (binary), validation log loss (multiclass)
    seed: int = 0
    # legacy: the full grid, each config tuned with legacy_trials Optuna trials
    legacy_trials: int = Field(10, ge=1)
    # hpm
    hpm_trials: int = Field(2, ge=1)
    max_configs: int = Field(16, ge=1)
    adaptive_selection: bool = True  # screen every config cheaply, carry the best max_configs to full budget
    screen_fraction: float = Field(
        0.3, gt=0.0, le=1.0
    )  # share of the training rows and boosting rounds a screening fit gets
    adaptive_temperature: bool = True  # keep the temperatures closest (KL) to what each student can represent
    temperatures_per_student: int = Field(2, ge=1)
    shared_memory: bool = True
    chain: bool = True
    min_improvement: float = Field(0.01, ge=0.0)
    fusion: Literal["weights", "attention", "best"] = "weights"
    augment: bool = False
    augment_fraction: float = Field(0.5, gt=0.0, le=5.0)  # synthetic rows as a share of training rows
    augment_seconds: float = Field(30.0, gt=0.0)
