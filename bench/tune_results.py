"""Per-trial overhead read from Tune's own per-trial results, shared by ``bench/hpo.py`` and ``bench/scale.py``."""

from __future__ import annotations

import json
from pathlib import Path


def trial_overhead(experiment: Path, slots: int) -> float:
    """(search span x slots - summed in-trial time) / trials, from each trial's Tune results.

    A trial starts its in-trial time (``time_total_s``) before its first report. The span's ends come from each
    report's own ``reported_at`` (float seconds): Tune's ``timestamp`` is whole seconds, up to a second off at
    each end (+-2 / trials s). File times cannot stand in: Tune touches every ``result.json`` when the
    experiment ends.
    """
    starts, ends, busy = [], [], []
    for f in experiment.glob("*/result.json"):
        reports = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
        if reports:
            first, last = reports[0], reports[-1]
            starts.append(first["reported_at"] - first["time_total_s"])
            ends.append(last["reported_at"])
            busy.append(last["time_total_s"])
    if not ends:
        raise SystemExit(f"no Tune results under {experiment}")
    return ((max(ends) - min(starts)) * slots - sum(busy)) / len(ends)
