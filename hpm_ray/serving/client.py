"""The A/B app's HTTP client: one JSON call, its failures as :class:`~hpm_ray.errors.HPMError`.

Standard library only, so ``hpm-ray ab`` and the drift watcher talk to a running app without importing Serve.
"""

from __future__ import annotations

import json

from hpm_ray.errors import HPMError

TOKEN_ENV = "HPM_RAY_SERVE_TOKEN"  # the admin token, for the app (hpm_ray.serving.app) and its clients
FEEDBACK_TOKEN_ENV = "HPM_RAY_FEEDBACK_TOKEN"  # the label feedback token: labels move the rollout, so they need one
DEFAULT_URL = "http://127.0.0.1:8000"


def call(
    url: str, method: str, path: str, body: dict | list | None = None, token: str | None = None, timeout: float = 30.0
) -> dict:
    """One JSON call to the app; an HTTP error or an unreachable app becomes an :class:`HPMError`."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    try:
        req = urllib.request.Request(
            url.rstrip("/") + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
    except ValueError as exc:
        raise HPMError(f"--url: not an http(s) URL: {url!r} ({exc})") from None
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")  # noqa: TRY004 - handled below with the other bad answers
        return answer
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", "")
        except ValueError:
            message = ""
        raise HPMError(f"{path}: HTTP {exc.code} {message or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise HPMError(f"no A/B app at {url} ({getattr(exc, 'reason', exc)}); start one with 'hpm-ray serve'") from None
    except ValueError:  # something answered, but not the A/B app's JSON
        raise HPMError(
            f"{url}{path} answered, but not with the A/B app's JSON: is --url the hpm-ray serve address?"
        ) from None
