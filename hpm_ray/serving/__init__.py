"""Weighted A/B serving on Ray Serve: payload parsing, routing, staged rollout, state, the app.

Heavy imports (Ray Serve, FastAPI) happen only when :func:`start_ab` / :func:`stop` are used.
"""

from __future__ import annotations


def start_ab(*args, **kwargs) -> str:
    """See :func:`hpm_ray.serving.app.start_ab`."""
    from hpm_ray.serving.app import start_ab as _start

    return _start(*args, **kwargs)


def stop(app_name: str = "hpm-ab") -> None:
    """See :func:`hpm_ray.serving.app.stop`."""
    from hpm_ray.serving.app import stop as _stop

    _stop(app_name)


__all__ = ["start_ab", "stop"]
