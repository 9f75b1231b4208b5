"""The sentences a therapist reads beside each channel."""

from __future__ import annotations

import re

import numpy as np

from emg_core import analyze
from emg_core.synthetic import c3d_bytes, ghostly_recording, realistic_recording


def test_dropouts_are_reported_in_seconds_and_masked():
    content, truth = realistic_recording(seed=5, duration_s=60.0, dropouts=3, hum_x_rest=0.0)
    for ch in analyze(content).channels:
        dropouts = truth.channel(ch.name).dropouts
        stuck_s = sum(d.end_s - d.start_s for d in dropouts)
        (sentence,) = [w for w in ch.warnings if "dropout" in w]
        said = float(re.match(r"([\d.]+) s of sensor dropout masked", sentence).group(1))
        assert abs(said - stuck_s) <= 0.05 + 1e-9, (sentence, stuck_s)
        assert f"({len(dropouts)} stretches" in sentence
        assert ch.masked_s >= stuck_s


def test_a_recording_with_little_rest_says_its_levels_are_relative():
    # long contractions with short pauses: under 30 % of the time at rest
    content, _ = ghostly_recording(seed=3, duration_s=60.0, burst_s=(4.0, 6.0), gap_s=(0.6, 1.0))
    for ch in analyze(content).channels:
        assert any("little rest" in w for w in ch.warnings), ch.warnings


def test_a_session_with_ordinary_rest_carries_no_such_warning():
    content, _ = ghostly_recording(seed=3, duration_s=60.0)
    for ch in analyze(content).channels:
        assert not any("little rest" in w for w in ch.warnings), ch.warnings


def test_a_flat_channel_is_unusable_and_says_why():
    rng = np.random.default_rng(0)
    live = 1e-5 * rng.standard_normal(20_000)
    data = np.vstack([live, np.zeros(20_000)])
    result = analyze(c3d_bytes(("CH1 Raw", "CH2 Raw"), data, 1000.0))
    flat = result.channels[1]
    assert not flat.usable and flat.contractions_total is None
    assert flat.warnings[0].startswith("not analysed: flat")
