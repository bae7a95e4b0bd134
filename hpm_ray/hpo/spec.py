"""``HPOSpec``: every setting of ``hpm-ray hpo``, validated once (YAML file + CLI flags)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from hpm_ray.config import RuntimeSpec, Spec
from hpm_ray.hpo.conformal import quantile_pairs
from hpm_ray.hpo.learners import get_learner


class HPOSpec(Spec):
    """Search, scheduler, split and calibration settings for a multi-horizon quantile HPO run."""

    data: str | None = None  # None: the bundled BTC series
    time_col: str = "timestamp"
    price_col: str = "close"
    max_rows: int | None = Field(None, ge=500)  # keep only the most recent N bars (quick runs); None: all
    horizons: list[int] = Field(default_factory=lambda: [42, 48, 54, 60])
    quantiles: list[float] = Field(default_factory=lambda: [0.05, 0.25, 0.5, 0.75, 0.95])
    learner: str = "lightgbm"  # a registered quantile learner (hpm_ray.hpo.learners)
    trials_per_horizon: int = Field(50, ge=1)
    seed: int = 0
    # ASHA: the resource is boosting rounds, reported every `report_every` rounds (one Tune iteration each).
    max_rounds: int = Field(400, ge=1)
    report_every: int = Field(25, ge=1)
    grace_period: int = Field(2, ge=1)  # in reports
    reduction_factor: int = Field(3, ge=2)
    n_folds: int = Field(2, ge=1, le=5)  # purged walk-forward folds over the validation block
    # train, validation, calibration, test: calibration sits right before test, so CQR sees the recent regime.
    fractions: tuple[float, float, float, float] = (0.55, 0.2, 0.1, 0.15)
    embargo: int | None = Field(None, ge=0)  # None: the horizon
    # Models learn quantiles of return / (this feature x sqrt(h)); quantiles are scale-equivariant, so the
    # forecast is the scale times those quantiles. Volatility clusters, so this is the structure trees miss
    # most easily (chosen on validation pinball). None: raw returns.
    scale_by: str | None = "rv_168"
    max_concurrent_trials: int | None = Field(None, ge=1)  # per horizon; None: cluster CPUs / horizons
    aci_gamma: float = Field(0.005, gt=0, lt=1)  # the fixed-step ACI shown beside the shipped interval
    # The interval that ships: conformal PID (online, labels h bars late), ACI, split CQR, or "auto" (the method
    # too is chosen). Step sizes (PID: a fraction of the largest calibration score; ACI: gamma) are chosen on the
    # calibration block by interval score, never on test.
    interval_method: Literal["pid", "aci", "cqr", "auto"] = "pid"
    step_sizes: list[float] = Field(default_factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05])
    # A volatility feature known at t: its training-block terciles group PID's trackers and the report's
    # conditional coverage; with pid_normalize, PID's scores are divided by it.
    interval_vol: str = "rv_168"
    pid_by_tercile: bool = True
    pid_normalize: bool = False
    pid_integrator: bool = False
    points_to_evaluate: list[dict] = Field(default_factory=list)  # configs tried first (warm start)
    model_prefix: str = "hpo-quantile"  # registered as <prefix>-h<horizon>
    experiment: str = "hpm-ray-hpo"
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError(f"horizons must be positive bar counts, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"horizons must be distinct, got {v}")
        return v

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        quantile_pairs(v)  # raises SpecError with the specific problem
        return v

    @field_validator("step_sizes")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 < s < 1.0 for s in v):
            raise ValueError(f"step sizes must lie strictly between 0 and 1, got {v}")
        return v

    @field_validator("learner")
    @classmethod
    def _learner(cls, v: str) -> str:
        get_learner(v)  # raises SpecError naming the known learners
        return v

    @field_validator("points_to_evaluate")
    @classmethod
    def _points(cls, v: list[dict], info: ValidationInfo) -> list[dict]:
        if "learner" not in info.data:  # the learner itself is invalid: that error is the one to show
            return v
        names = {p.name for p in get_learner(info.data["learner"]).space}
        for point in v:
            if set(point) != names:
                missing, extra = sorted(names - set(point)), sorted(set(point) - names)
                raise ValueError(
                    f"each point must set exactly the learner's searched parameters; missing {missing}, unknown {extra}"
                )
        return v

    @model_validator(mode="after")
    def _rounds(self) -> HPOSpec:
        if self.report_every > self.max_rounds:
            raise ValueError(f"report_every ({self.report_every}) exceeds max_rounds ({self.max_rounds})")
        return self

    @property
    def max_reports(self) -> int:
        """ASHA's ``max_t``: reports per full trial."""
        return self.max_rounds // self.report_every
