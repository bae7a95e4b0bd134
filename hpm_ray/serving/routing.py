"""Pick a variant per request: by weight at random, or stickily by a request key.

A key is hashed to a point in [0, 1) and compared with the cumulative weights in a fixed variant order,
so the same key gets the same variant while the weights stand, and raising the last variant's weight only
moves keys towards it.
"""

from __future__ import annotations

import hashlib
import random


def normalized(weights: dict[str, float]) -> dict[str, float]:
    """Weights scaled to sum to 1, zero-weight variants dropped; ``ValueError`` if none is positive."""
    if any(w < 0 for w in weights.values()):
        raise ValueError(f"weights must be >= 0, got {weights}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("at least one variant needs a positive weight")
    return {k: w / total for k, w in weights.items() if w > 0}


def key_point(key: str) -> float:
    """A stable point in [0, 1) for a request key (same on every replica and Python process)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick(weights: dict[str, float], point: float) -> str:
    """The variant whose cumulative-weight interval contains ``point`` in [0, 1)."""
    shares = normalized(weights)
    cumulative = 0.0
    for name, share in shares.items():
        cumulative += share
        if point < cumulative:
            return name
    return next(reversed(shares))  # rounding left point just above the last boundary


def choose(weights: dict[str, float], key: str | None = None, rng: random.Random | None = None) -> str:
    """Sticky when ``key`` is given, else a weighted random draw."""
    point = key_point(key) if key else (rng or random).random()
    return pick(weights, point)
