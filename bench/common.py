"""Helpers shared by the benchmarks: one timing method, spreads, onset scoring, output.

Every benchmark prints one JSON object on stdout (seconds, bytes) followed by one summary line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# A true burst counts as found when a detected onset lies in [start - this, end): bursts in the
# synthetic recordings are at least 1.5 s apart, so the windows of two bursts never overlap.
ONSET_LEAD_S = 0.5


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max (and the relative spread) of repeated measurements."""
    med = statistics.median(values)
    return {
        "min": min(values),
        "median": med,
        "max": max(values),
        "spread_pct": 100 * (max(values) - min(values)) / med if med else 0.0,
        "runs": len(values),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def time_repeats(fn: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    """The one timing method of every benchmark: one warm-up call (imports, caches, FFT plans;
    not counted), then ``repeat`` timed calls with ``time.perf_counter``; returns their spread
    and the last call's result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return spread(times), result


def peak_traced(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated through Python's allocators (numpy included) during one call."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def score_onsets(
    onsets_s: Sequence[float],
    bursts: Sequence[Any],
    offsets_s: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Score detected onsets (optionally with their offsets) against true bursts.

    A burst is found when a detected onset lies in ``[start_s - ONSET_LEAD_S, end_s)``; the
    earliest such onset is its match and gives the onset error (and, with offsets, the offset
    error of the same detection). Every other detected onset is a false detection, extra
    onsets inside one burst included. The same rule for every library, so onset-only output
    (BioSPPy) and onset/offset pairs (emgd, NeuroKit2) are judged alike.
    """
    ends = offsets_s if offsets_s is not None else [None] * len(onsets_s)
    onsets = sorted(zip(onsets_s, ends, strict=True), key=lambda pair: pair[0])
    used = [False] * len(onsets)
    onset_err, offset_err, missed = [], [], 0
    for b in bursts:
        hit = next(
            (
                i
                for i, (t, _) in enumerate(onsets)
                if not used[i] and b.start_s - ONSET_LEAD_S <= t < b.end_s
            ),
            None,
        )
        if hit is None:
            missed += 1
            continue
        used[hit] = True
        onset_err.append(abs(onsets[hit][0] - b.start_s) * 1000)
        if onsets[hit][1] is not None:
            offset_err.append(abs(onsets[hit][1] - b.end_s) * 1000)
    return {
        "bursts": len(bursts),
        "found": len(bursts) - missed,
        "missed": missed,
        "false": used.count(False),
        "mean_abs_onset_ms": statistics.fmean(onset_err) if onset_err else None,
        "median_abs_onset_ms": statistics.median(onset_err) if onset_err else None,
        "mean_abs_offset_ms": statistics.fmean(offset_err) if offset_err else None,
    }


def merge_scores(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pool per-channel scores (means weighted by the bursts found)."""
    found = sum(s["found"] for s in scores)

    def pooled(key: str) -> float | None:
        parts = [(s[key], s["found"]) for s in scores if s[key] is not None and s["found"]]
        if not parts:
            return None
        return sum(v * n for v, n in parts) / sum(n for _, n in parts)

    return {
        "bursts": sum(s["bursts"] for s in scores),
        "found": found,
        "missed": sum(s["missed"] for s in scores),
        "false": sum(s["false"] for s in scores),
        "mean_abs_onset_ms": pooled("mean_abs_onset_ms"),
        "mean_abs_offset_ms": pooled("mean_abs_offset_ms"),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on (load matters: the machine is shared)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load] if load else None,
        "python": sys.version.split()[0],
    }


def emit(report: dict[str, Any], summary: str) -> None:
    """The JSON report, then the one-line summary, on stdout."""
    print(json.dumps(report, indent=2, default=str))
    print(summary, flush=True)


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"
