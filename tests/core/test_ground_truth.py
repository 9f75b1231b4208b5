"""Detection against the synthetic generator's ground truth, through real C3D bytes."""

from __future__ import annotations

import numpy as np
import pytest

from emg_core import AnalysisOptions, analyze
from emg_core.synthetic import ghostly_recording

from .helpers import match

SNRS_DB = (20.0, 30.0, 40.0)
SEEDS = (11, 12, 13)


@pytest.mark.parametrize("rate", [990.0, 1000.0, 2000.0])
def test_every_burst_found_no_false_contraction_and_edges_accurate(rate):
    onset, offset = [], []
    for snr in SNRS_DB:
        for seed in SEEDS:
            content, truth = ghostly_recording(
                seed=seed,
                duration_s=75.0,
                rate=rate,
                snr_db=snr,
                burst_s=(0.3, 6.0),
                ramp_s=(0.03, 0.3),
                amplitude_mvc=(0.4, 1.0),
            )
            result = analyze(content, name=truth.file_name)
            assert [c.name for c in result.channels] == list(truth.channels)
            for channel in result.channels:
                m = match(channel.contractions, truth.bursts_for(channel.name))
                where = f"rate={rate} snr={snr} seed={seed} {channel.name}"
                assert m.missed == 0, f"missed bursts at {where}"
                assert m.false == 0, f"false contractions at {where}"
                onset += m.onset_errors_ms
                offset += m.offset_errors_ms
    assert len(onset) > 100
    assert np.mean(np.abs(onset)) <= 20.0, f"mean |onset error| {np.mean(np.abs(onset)):.1f} ms"
    assert np.mean(np.abs(offset)) <= 30.0, f"mean |offset error| {np.mean(np.abs(offset)):.1f} ms"


def test_contractions_longer_than_the_maximum_are_split_in_two():
    content, truth = ghostly_recording(
        seed=5, duration_s=60, rate=1000, burst_s=(12.0, 14.0), gap_s=(2.0, 3.0), snr_db=35
    )
    result = analyze(content)
    assert [c.name for c in result.channels] == list(truth.channels)  # the loops run over both
    for channel in result.channels:
        # every true burst is longer than the 10 s maximum, so each comes out in two pieces
        assert channel.contractions_total == 2 * len(truth.bursts_for(channel.name))
        assert max(c.duration_ms for c in channel.contractions) <= 10_000.0
    merged = analyze(content, options=AnalysisOptions(max_contraction_ms=60_000))
    assert [c.name for c in merged.channels] == list(truth.channels)
    for channel in merged.channels:
        assert channel.contractions_total == len(truth.bursts_for(channel.name))


def test_given_mvc_classifies_intensity_and_duration_against_truth():
    # 0.65 MVC is the hard case: its 50 ms RMS peaks cross 75 %, its sustained level does not
    amplitudes = (0.4, 0.65, 1.0)
    content, truth = ghostly_recording(
        seed=21,
        duration_s=90,
        rate=990,
        amplitudes_mvc=amplitudes,
        burst_s=(0.8, 4.0),
        snr_db=35,
    )
    mvc = {label: truth.mvc[label] for label in truth.channels}
    result = analyze(content, options=AnalysisOptions(mvc=mvc, mvc_percentage=75))
    assert [c.name for c in result.channels] == list(truth.channels)  # the loop runs over both
    for channel in result.channels:
        assert channel.mvc_method == "given"
        assert channel.mvc_value == pytest.approx(truth.mvc[channel.name])
        bursts = truth.bursts_for(channel.name)
        assert len(channel.contractions) == len(bursts)
        for c, b in zip(channel.contractions, bursts, strict=True):
            assert c.meets_mvc == (b.amplitude >= 0.75 * truth.mvc[channel.name])
            # durations well away from the 2 s threshold must be classified like the truth
            if abs(b.duration_s - 2.0) > 0.1:
                assert c.meets_duration == (b.duration_s >= 2.0)
            assert c.is_good == (c.meets_mvc and c.meets_duration)
        assert channel.contractions_good == sum(c.is_good for c in channel.contractions)


def test_estimated_mvc_is_near_the_strongest_plateau():
    content, truth = ghostly_recording(seed=8, duration_s=60, rate=2000, snr_db=40)
    result = analyze(content)
    assert [c.name for c in result.channels] == list(truth.channels)  # the loop runs over both
    for channel in result.channels:
        strongest = max(b.amplitude for b in truth.bursts_for(channel.name))
        assert channel.mvc_method == "session_estimate"
        # a 500 ms mean of a 50 ms RMS envelope: within 15 % of the plateau RMS
        assert channel.mvc_value == pytest.approx(strongest, rel=0.15)


def test_activated_channel_is_a_hint_with_an_agreement_score():
    content, truth = ghostly_recording(seed=4, duration_s=90, rate=990, snr_db=35)
    result = analyze(content)
    assert [c.name for c in result.channels] == list(truth.channels)  # the loop runs over both
    for channel in result.channels:
        assert channel.activation_agreement is not None
        assert 0.5 <= channel.activation_agreement <= 1.0
        # the lagging, flickering game gate does not decide the count: the truth does
        assert channel.contractions_total == len(truth.bursts_for(channel.name))
    assert result.processing["channel_selection"]["activated_hints"] == {
        "CH1 Raw": "CH1 activated",
        "CH2 Raw": "CH2 activated",
    }
