"""MLflow registry: logging pyfunc models with their metrics, aliases, and quality gates."""

from hpm_ray.registry.models import KIND_TAG, log_and_register, version_metrics

__all__ = ["KIND_TAG", "log_and_register", "version_metrics"]
