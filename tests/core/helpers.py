"""Shared helpers of the emg_core tests (matching detections to generator ground truth)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# The real vendor recordings (Vicon, BTS, Qualisys) are not ours to commit; they live in a folder
# named by EMGD_VENDOR_SAMPLES, by default shared/c3d beside the repository.
DEFAULT_VENDOR_DIR = Path(__file__).resolve().parents[3] / "shared" / "c3d"


def vendor_dir() -> Path:
    return Path(os.environ.get("EMGD_VENDOR_SAMPLES") or DEFAULT_VENDOR_DIR)


VENDOR_DIR = vendor_dir()


def vendor_file(name: str) -> Path:
    path = vendor_dir() / name
    if not path.exists():
        pytest.skip(
            f"vendor sample {path} is absent (set EMGD_VENDOR_SAMPLES to the folder of C3D samples)"
        )
    return path


@dataclass
class Match:
    missed: int
    false: int
    onset_errors_ms: list[float]
    offset_errors_ms: list[float]


def match(contractions, bursts) -> Match:
    """Pair each true burst with the detections overlapping it.

    A burst overlapped by no detection is missed; a detection overlapping no burst, or a second
    detection on the same burst, is a false contraction.
    """
    starts = np.array([c.start_ms for c in contractions]) / 1000
    ends = np.array([c.end_ms for c in contractions]) / 1000
    used: set[int] = set()
    out = Match(0, 0, [], [])
    for b in bursts:
        hits = np.flatnonzero((starts < b.end_s) & (ends > b.start_s)) if starts.size else []
        if len(hits) == 0:
            out.missed += 1
            continue
        out.false += len(hits) - 1
        used.update(int(h) for h in hits)
        out.onset_errors_ms.append(1000 * (starts[hits[0]] - b.start_s))
        out.offset_errors_ms.append(1000 * (ends[hits[-1]] - b.end_s))
    out.false += len(contractions) - len(used)
    return out
