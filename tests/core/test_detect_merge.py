"""Detection's merge and weak-effort rules on hand-built envelopes."""

from __future__ import annotations

import numpy as np
import pytest

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


def _strong_and_weak(weak_height: float) -> np.ndarray:
    """Rest at 1.0, five 1 s bursts at 100x rest, then three at ``weak_height`` x rest."""
    rng = np.random.default_rng(5)
    env = 1.0 + 0.05 * rng.random(20_000)
    for k in range(8):
        start = 1000 + 2000 * k
        env[start : start + 1000] = 100.0 if k < 5 else weak_height
    return env


def test_a_weak_effort_well_above_rest_is_left_out_and_counted_apart():
    det = detect_contractions(_strong_and_weak(20.0), RATE)  # 20x rest, 20 % of the others
    assert len(det) == 5 and det.weak_efforts == 3
    assert det.starts.max() < 10_000
    assert det.typical_peak == pytest.approx(100.0, rel=0.01)


def test_an_effort_at_a_third_of_the_others_is_a_contraction():
    det = detect_contractions(_strong_and_weak(34.0), RATE)
    assert len(det) == 8 and det.weak_efforts == 0


def test_without_the_weak_effort_rule_every_run_counts():
    det = detect_contractions(_strong_and_weak(20.0), RATE, min_peak_fraction=0.0)
    assert len(det) == 8 and det.weak_efforts == 0
