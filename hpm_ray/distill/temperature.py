"""Which temperatures to try for a student: a fixed grid, or the ones its measured divergence favours.

A weak student cannot reproduce a sharp teacher; distilling from a target it can represent wastes less
capacity. :class:`DivergenceTemperature` softens the teacher at each grid temperature and keeps those
closest (KL on validation rows) to a probe student's own predictions.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hpm_ray.distill.soft_targets import soften
from hpm_ray.metrics import kl_divergence


class TemperatureSchedule(Protocol):
    def choose(self, teacher_val: np.ndarray, student_val: np.ndarray, grid: list[float]) -> list[float]: ...


class FixedGrid:
    """Every temperature of the grid (legacy behaviour)."""

    def choose(self, teacher_val, student_val, grid):
        return list(grid)


def divergence_curve(teacher_val: np.ndarray, student_val: np.ndarray, grid: list[float]) -> list[float]:
    """KL(softened teacher at T || student) for each T of the grid."""
    return [kl_divergence(soften(teacher_val, t), student_val) for t in grid]


class DivergenceTemperature:
    """The ``keep`` grid temperatures with the smallest teacher-student divergence, in grid order."""

    def __init__(self, keep: int = 2):
        self.keep = keep

    def choose(self, teacher_val, student_val, grid):
        kl = divergence_curve(teacher_val, student_val, grid)
        chosen = set(np.argsort(kl, kind="stable")[: self.keep].tolist())
        return [t for i, t in enumerate(grid) if i in chosen]
