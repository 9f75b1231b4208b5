"""Session rates, overall compliance and left/right symmetry against hand-worked numbers.

A contraction is good when it is both strong enough (>= the MVC threshold) and long enough (>= the
duration threshold); compliance counts good contractions only. The unit tests use counts whose
good, MVC-compliant and duration-compliant numbers all differ, so swapping one count for another
changes the answer. The end-to-end tests analyse clean synthetic recordings (40 dB SNR, rests of
2.5 s or more) and assert how the result's fields relate to each other, or values that any
detector finding the clean bursts must give, never the exact number of detected contractions.
"""

from __future__ import annotations

import numpy as np
import pytest

from emg_core import AnalysisOptions, analyze
from emg_core.metrics import rates, symmetry
from emg_core.synthetic import c3d_bytes, ghostly_recording, ghostly_signals

# --------------------------------------------------------------------------------------------
# rates()


def test_rates_of_a_partial_session():
    # 10 contractions of 12 asked for: 7 strong enough, 5 long enough, 4 both
    got = rates(total=10, good=4, mvc_ok=7, duration_ok=5, expected=12)
    assert got == pytest.approx(
        {
            "completion_rate": 10 / 12,  # min(10, 12) / 12
            "intensity_rate": 0.7,  # 7 / 10: per contraction made, not per one asked for
            "duration_rate": 0.5,  # 5 / 10
            "compliance_rate": 1 / 3,  # min(4, 12) / 12 = 4 / 12; MVC-only would be 7 / 12
        }
    )


def test_compliance_counts_good_contractions_not_strong_ones():
    # every contraction strong, none long enough: nothing complies with the protocol
    got = rates(total=6, good=0, mvc_ok=6, duration_ok=0, expected=12)
    assert got["compliance_rate"] == 0.0  # min(0, 12) / 12; MVC-only would be 6 / 12
    assert got["intensity_rate"] == 1.0  # 6 / 6
    # and the other way round: every contraction long enough, 3 of them strong as well
    got = rates(total=8, good=3, mvc_ok=3, duration_ok=8, expected=12)
    assert got["compliance_rate"] == pytest.approx(0.25)  # min(3, 12) / 12
    assert got["duration_rate"] == 1.0  # 8 / 8


def test_rates_above_the_expected_count_are_capped_at_one():
    # 15 contractions of 12 asked for, 13 good
    got = rates(total=15, good=13, mvc_ok=14, duration_ok=14, expected=12)
    assert got == pytest.approx(
        {
            "completion_rate": 1.0,  # min(15, 12) / 12 = 12 / 12
            "intensity_rate": 14 / 15,  # not capped: a share of the contractions made
            "duration_rate": 14 / 15,
            "compliance_rate": 1.0,  # min(13, 12) / 12 = 12 / 12
        }
    )


def test_compliance_is_capped_only_by_good_contractions():
    # more contractions than asked for, but fewer good ones than asked for
    got = rates(total=15, good=9, mvc_ok=14, duration_ok=10, expected=12)
    assert got == pytest.approx(
        {
            "completion_rate": 1.0,  # min(15, 12) / 12
            "intensity_rate": 14 / 15,  # 0.9333
            "duration_rate": 10 / 15,  # 0.6667
            "compliance_rate": 0.75,  # min(9, 12) / 12 = 9 / 12; MVC-only: min(14, 12) / 12 = 1
        }
    )


def test_rates_without_contractions_are_zero():
    # no contraction: every share is 0, none is a division by zero
    assert rates(total=0, good=0, mvc_ok=0, duration_ok=0, expected=12) == {
        "completion_rate": 0.0,
        "intensity_rate": 0.0,
        "duration_rate": 0.0,
        "compliance_rate": 0.0,
    }


def test_rates_when_nothing_is_expected():
    # completion and compliance are shares of what was asked for: 0 when nothing was
    got = rates(total=3, good=2, mvc_ok=3, duration_ok=2, expected=0)
    assert got["completion_rate"] == 0.0 and got["compliance_rate"] == 0.0
    assert got["intensity_rate"] == 1.0  # 3 / 3
    assert got["duration_rate"] == pytest.approx(2 / 3)  # 2 / 3


def test_a_single_expected_contraction():
    got = rates(total=1, good=1, mvc_ok=1, duration_ok=1, expected=1)
    assert got["completion_rate"] == 1.0 and got["compliance_rate"] == 1.0  # 1 / 1


# --------------------------------------------------------------------------------------------
# symmetry()


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (0.5, 0.5, 1.0),  # 1 - |0.5 - 0.5| / 1.0 = 1 - 0
        (0.5, 0.25, 2 / 3),  # 1 - 0.25 / 0.75 = 1 - 1/3
        (0.75, 0.25, 0.5),  # 1 - 0.5 / 1.0
        (1.0, 0.0, 0.0),  # 1 - 1 / 1: one side did nothing
        (0.0, 0.0, 1.0),  # nothing on either side: equal, not undefined
        (3000.0, 1000.0, 0.5),  # time under tension in ms: 1 - 2000 / 4000
        (12500.0, 10000.0, 1 - 2500 / 22500),  # 1 - 1/9 = 0.8889
    ],
)
def test_symmetry_hand_worked(left, right, expected):
    assert symmetry(left, right) == pytest.approx(expected)
    assert symmetry(right, left) == pytest.approx(expected)  # no side is the reference


# --------------------------------------------------------------------------------------------
# end to end: analyze() on clean synthetic recordings

# Clean, well-separated bursts: 40 dB SNR, rests of 2.5-4 s, short ramps, every plateau at
# 90-100 % of the MVC. Bursts last 1-4 s, so some are strong but shorter than the 2 s duration
# threshold (strong, not good) and others are strong and long (good).
CLEAN = {
    "duration_s": 60.0,
    "burst_s": (1.0, 4.0),
    "gap_s": (2.5, 4.0),
    "ramp_s": (0.05, 0.1),
    "amplitudes_mvc": (1.0, 0.95, 0.9),
    "snr_db": 40.0,
}
# an MVC no burst of these recordings (plateaus <= 1.5 mV RMS) comes near: 75 % of 1 V
UNREACHABLE_MVC_V = 1.0


@pytest.fixture(scope="module")
def clean_recordings():
    return {seed: ghostly_recording(seed=seed, **CLEAN) for seed in (0, 3)}


@pytest.mark.parametrize("seed", [0, 3])
def test_compliance_counts_only_contractions_both_strong_and_long(seed, clean_recordings):
    content, truth = clean_recordings[seed]
    result = analyze(content)
    for ch in result.channels:
        durations = [b.duration_s for b in truth.bursts_for(ch.name)]
        # the recording's own preconditions: clearly short and clearly long bursts
        assert min(durations) < 1.6 and max(durations) > 2.5
        assert ch.contractions_good <= ch.contractions_mvc_compliant
        assert ch.contractions_good <= ch.contractions_duration_compliant
        # there are strong-but-short contractions, so good and MVC-only counts differ ...
        assert 0 < ch.contractions_good < ch.contractions_mvc_compliant
        expected = ch.expected_contractions
        assert ch.contractions_good < expected
        # ... and compliance follows the good ones
        assert ch.compliance_rate == pytest.approx(min(ch.contractions_good, expected) / expected)
        mvc_only = min(ch.contractions_mvc_compliant, expected) / expected
        assert ch.compliance_rate != pytest.approx(mvc_only)
        # the other rates from the same counts
        total = ch.contractions_total
        assert ch.completion_rate == pytest.approx(min(total, expected) / expected)
        assert ch.intensity_rate == pytest.approx(ch.contractions_mvc_compliant / total)
        assert ch.duration_rate == pytest.approx(ch.contractions_duration_compliant / total)


def test_compliance_is_capped_at_the_expected_count(clean_recordings):
    content, _ = clean_recordings[0]
    result = analyze(content, options=AnalysisOptions(expected_contractions=2))
    for ch in result.channels:
        assert ch.contractions_good > 2  # the cap is what this test is about
        assert ch.compliance_rate == 1.0  # min(good, 2) / 2 = 2 / 2
        assert ch.completion_rate == 1.0  # min(total, 2) / 2


def test_overall_compliance_is_the_mean_over_channels(clean_recordings):
    content, _ = clean_recordings[3]
    result = analyze(content)
    rates_ = [ch.compliance_rate for ch in result.channels]
    assert rates_[0] != rates_[1]  # a mean of two different numbers, not of two equal ones
    # (c1 + c2) / 2
    assert result.overall_compliance == pytest.approx(sum(rates_) / 2)


def test_overall_compliance_hand_worked():
    # CH1: at least one good contraction and one asked for -> min(good, 1) / 1 = 1.0
    # CH2: an MVC no burst comes near -> no good contraction -> 0 / 1 = 0.0
    # overall = (1.0 + 0.0) / 2 = 0.5
    content, _ = ghostly_recording(seed=1, **{**CLEAN, "duration_s": 30.0})
    options = AnalysisOptions(expected_contractions=1, mvc={"CH2 Raw": UNREACHABLE_MVC_V})
    result = analyze(content, options=options)
    ch1, ch2 = result.channels
    assert (ch1.compliance_rate, ch2.compliance_rate) == (1.0, 0.0)
    assert result.overall_compliance == 0.5


def test_overall_compliance_leaves_out_a_flat_channel():
    # three raw channels, CH3 a disconnected sensor (exact zeros): it is not a channel that
    # failed the protocol, so it does not count. (1.0 + 0.0) / 2 = 0.5, not (1.0 + 0.0 + 0.0) / 3
    labels, data, truth = ghostly_signals(seed=1, n_channels=3, **{**CLEAN, "duration_s": 30.0})
    data[labels.index("CH3 Raw")] = 0.0
    data[labels.index("CH3 activated")] = 0.0
    content = c3d_bytes(labels, data, truth.rate)
    options = AnalysisOptions(expected_contractions=1, mvc={"CH2 Raw": UNREACHABLE_MVC_V})
    result = analyze(content, options=options)
    by_name = {ch.name: ch for ch in result.channels}
    assert set(by_name) == {"CH1 Raw", "CH2 Raw", "CH3 Raw"}
    assert by_name["CH1 Raw"].compliance_rate == 1.0
    assert by_name["CH2 Raw"].compliance_rate == 0.0
    assert result.overall_compliance == 0.5


def test_session_symmetry_of_compliance_rates(clean_recordings):
    # GHOSTLY with two raw channels: CH1 and CH2 are the two legs
    content, _ = clean_recordings[3]
    result = analyze(content)
    left, right = (ch.compliance_rate for ch in result.channels)
    assert left > 0 and right > 0 and left != right
    # 1 - |L - R| / (L + R)
    assert result.symmetry == pytest.approx(1 - abs(left - right) / (left + right))


def test_session_symmetry_hand_worked():
    # L = 1.0 (one good contraction of one asked for), R = 0.0 (MVC out of reach):
    # 1 - |1.0 - 0.0| / (1.0 + 0.0) = 0.0, although both legs moved
    content, _ = ghostly_recording(seed=1, **{**CLEAN, "duration_s": 30.0})
    options = AnalysisOptions(expected_contractions=1, mvc={"CH2 Raw": UNREACHABLE_MVC_V})
    result = analyze(content, options=options)
    assert result.symmetry == 0.0


def test_session_symmetry_falls_back_to_time_under_tension():
    # neither leg reaches its MVC threshold: both compliance rates are 0, which says nothing
    # about symmetry, so the time under tension of the two legs is compared instead
    content, _ = ghostly_recording(seed=1, **{**CLEAN, "duration_s": 30.0})
    options = AnalysisOptions(mvc={"CH1 Raw": UNREACHABLE_MVC_V, "CH2 Raw": UNREACHABLE_MVC_V})
    result = analyze(content, options=options)
    left, right = result.channels
    assert left.compliance_rate == 0.0 and right.compliance_rate == 0.0
    tl, tr = left.time_under_tension_ms, right.time_under_tension_ms
    assert tl > 0 and tr > 0 and tl != tr
    # 1 - |TUT_L - TUT_R| / (TUT_L + TUT_R)
    assert result.symmetry == pytest.approx(1 - abs(tl - tr) / (tl + tr))
    assert result.symmetry < 1.0
    assert np.isfinite(result.symmetry)
