"""When a drift alarm may act: a cooldown after the last retrain, promote or rollback, and the alarm on ``k``
of the last ``n`` checks.

Why both: a retrained challenger needs time in its A/B before the next alarm can judge it (the cooldown), and
one noisy window should not start a retrain that costs minutes of cluster time (k of n). With a per-check
false-alarm rate ``a`` and independent windows, k of n lowers the rate of acting on noise to about
``C(n, k) a^k`` (2 of 3 at a = 0.05: 0.007).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpm_ray.errors import SpecError

#: Events of the A/B app after which the watch waits a cooldown (``/ab/status`` history): a test that ends
#: undecided is its own event (``inconclusive``); ``champion``: the registry's alias moved under the running app.
AB_EVENTS = ("promote", "rollback", "inconclusive", "revert", "champion")
#: Actions of the watch itself after which it waits a cooldown.
WATCH_ACTIONS = ("ab_started", "refused")


@dataclass(frozen=True)
class Hysteresis:
    """``cooldown_s`` seconds after an action, then the alarm on ``k`` of the last ``n`` checks."""

    cooldown_s: float
    k: int = 1
    n: int = 1

    def __post_init__(self):
        if not 1 <= self.k <= self.n:
            raise SpecError(f"alarms must be k of n with 1 <= k <= n, got {self.k} of {self.n}")
        if self.cooldown_s < 0:
            raise SpecError(f"cooldown must be >= 0 s, got {self.cooldown_s}")


@dataclass(frozen=True)
class Permit:
    """Whether the watch may act now, and why (logged whichever way it goes)."""

    act: bool
    reason: str


def parse_alarms(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: act on the alarm in 2 of the last 3 checks."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise SpecError(f"alarms must look like K/N (e.g. 2/3), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def permit(alarms: Sequence[bool], last_action: float | None, now: float, rule: Hysteresis) -> Permit:
    """May a drifted check act? ``alarms``: the verdicts of the checks so far, oldest first, this one last.

    >>> permit([False, True, True], None, 0.0, Hysteresis(3600, k=2, n=3)).act
    True
    """
    if last_action is not None and now - last_action < rule.cooldown_s:
        left = rule.cooldown_s - (now - last_action)
        return Permit(
            False, f"cooldown: {left / 3600:.2f} h left of {rule.cooldown_s / 3600:g} h after the last action"
        )
    recent = list(alarms)[-rule.n :]
    hits = sum(bool(a) for a in recent)
    if hits < rule.k:
        return Permit(False, f"alarm on {hits} of the last {len(recent)} check(s); {rule.k} of {rule.n} needed")
    return Permit(True, f"alarm on {hits} of the last {len(recent)} check(s) (needs {rule.k} of {rule.n})")


class WatchLog:
    """The watch's JSON-lines log: one line per check with its verdict, action and reason.

    It is also the watch's memory across restarts: the recent verdicts (k of n) and its last action (cooldown).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write: the rest of the log still counts
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            torn = f.tell() > 0 and (f.seek(-1, 2), f.read(1))[1] != b"\n"  # a crash cut the last line
            f.write((("\n" if torn else "") + json.dumps({"time": time.time(), **entry}, default=str) + "\n").encode())

    def verdicts(self, version: str | None = None, after: float | None = None) -> list[bool]:
        """Drift verdicts of the completed checks, oldest first (errors are not checks); with ``version`` and
        ``after``, only those of that champion version later than ``after`` (the last action): older ones judged
        another model, or traffic an action has since answered."""
        return [
            bool(e["drifted"])
            for e in self.entries()
            if isinstance(e.get("drifted"), bool)
            and (version is None or e.get("version") == version)
            and (after is None or float(e["time"]) > after)
        ]

    def last_action(self) -> float | None:
        """When the newest action was logged, or the failure of a retrain that had started (registering, gates,
        A/B): either cost minutes of retraining, and the cooldown counts from the end of them."""
        times = [float(e["time"]) for e in self.entries() if e.get("action") in WATCH_ACTIONS or "retrained" in e]
        return max(times) if times else None


def last_ab_event(status: dict) -> float | None:
    """Time of the app's newest :data:`AB_EVENTS` entry in its ``/ab/status`` history (None if it shows none)."""
    times = [
        float(e["time"])
        for e in status.get("history") or ()
        if isinstance(e, dict) and e.get("event") in AB_EVENTS and "time" in e
    ]
    return max(times) if times else None
