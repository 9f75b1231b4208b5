"""Detection's merge rule on hand-built envelopes: brief relaxations bridge, real rest splits."""

from __future__ import annotations

import numpy as np

from emg_core.detect import detect_contractions

RATE = 1000.0


def _envelope(dip_s: float) -> np.ndarray:
    """Rest at 1.0 (with a little noise), a burst at 50x from 2 s, a dip to rest, a second burst."""
    rng = np.random.default_rng(3)
    env = 1.0 + 0.05 * rng.random(8000)
    first_end = 3000
    second_start = first_end + round(dip_s * RATE)
    env[2000:first_end] = 50.0
    env[second_start : second_start + 1000] = 50.0
    return env


def test_a_relaxation_shorter_than_the_merge_gap_is_one_contraction():
    det = detect_contractions(_envelope(0.1), RATE, merge_gap_s=0.2)
    assert len(det) == 1
    assert abs(det.starts[0] - 2000) <= 5 and abs(det.ends[0] - 4100) <= 5


def test_without_a_merge_gap_the_same_relaxation_splits():
    det = detect_contractions(_envelope(0.1), RATE, merge_gap_s=0.0)
    assert len(det) == 2


def test_a_return_to_rest_longer_than_the_merge_gap_splits():
    det = detect_contractions(_envelope(0.6), RATE, merge_gap_s=0.2)
    assert len(det) == 2
    assert det.ends[0] <= 3000 + 5 and det.starts[1] >= 3600 - 5
