"""Shared HTML rendering for every report hpm-ray writes (self-contained, no CDN)."""

from hpm_ray.report.html import Report

__all__ = ["Report"]
