"""hpm-ray: from hyperparameter search to distillation to live A/B serving, on Ray."""

from hpm_ray.errors import DataError, HPMError, SpecError

__version__ = "0.1.0"
__all__ = ["DataError", "HPMError", "SpecError", "__version__"]
