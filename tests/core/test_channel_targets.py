"""A therapist's per-channel targets reach the analysis: MVC (with its source and unit), intensity
target, duration threshold and expected contractions; an MVC written in the file outranks them;
and every target used is recorded in ``processing`` so the result can be reproduced."""

from __future__ import annotations

import pytest

from emg_core import AnalysisOptions, analyze
from emg_core.errors import InvalidOptionsError
from emg_core.synthetic import c3d_bytes, ghostly_recording, ghostly_signals


@pytest.fixture(scope="module")
def recording() -> bytes:
    content, _truth = ghostly_recording(seed=5, duration_s=40.0)
    return content


def _by_name(result):
    return {c.name: c for c in result.channels}


def test_without_targets_the_mvc_is_the_sessions_own_and_says_so(recording):
    result = analyze(recording)
    for ch in result.channels:
        assert ch.mvc_method == "session_estimate"
        assert ch.mvc_source.startswith("relative to this session")
        assert ch.mvc_threshold == pytest.approx(0.75 * ch.mvc_value)


def test_per_channel_targets_from_the_therapist(recording):
    base = _by_name(analyze(recording))
    ch1, ch2 = list(base)
    options = AnalysisOptions(
        channels={
            # the therapist works in mV; the file in V
            ch1: {
                "mvc_value": 2.0,
                "mvc_unit": "mV",
                "mvc_method": "patient_settings",
                "mvc_percentage": 50,
                "duration_threshold_ms": 500,
                "expected_contractions": 20,
            },
            "*": {"expected_contractions": 6},
        }
    )
    got = _by_name(analyze(recording, options=options))
    a, b = got[ch1], got[ch2]
    assert a.mvc_method == "patient_settings" and a.mvc_value == pytest.approx(2.0e-3)
    assert a.mvc_threshold == pytest.approx(1.0e-3)
    assert a.mvc_source == "the patient's settings"
    assert a.duration_threshold_ms == 500 and a.expected_contractions == 20
    # the same contractions, judged against the new targets
    assert a.contractions_total == base[ch1].contractions_total
    assert a.contractions_duration_compliant == sum(c.duration_ms >= 500 for c in a.contractions)
    assert a.contractions_mvc_compliant == sum(c.meets_mvc for c in a.contractions)
    assert a.completion_rate == pytest.approx(min(a.contractions_total, 20) / 20)
    # the other channel: "*" gives its expected count, the rest is the session-wide default
    assert b.mvc_method == "session_estimate" and b.mvc_value == base[ch2].mvc_value
    assert b.expected_contractions == 6 and b.duration_threshold_ms == 2000
    assert b.completion_rate == pytest.approx(min(b.contractions_total, 6) / 6)
    targets = analyze(recording, options=options).processing["targets_per_channel"]
    assert targets[ch1] == {
        "mvc_value": pytest.approx(2.0e-3),
        "mvc_method": "patient_settings",
        "mvc_percentage": 50.0,
        "duration_threshold_ms": 500.0,
        "expected_contractions": 20,
    }
    assert targets[ch2]["mvc_method"] == "session_estimate" and targets[ch2]["mvc_value"] is None


def test_a_lower_mvc_makes_more_contractions_reach_the_target(recording):
    label = analyze(recording).channels[0].name
    high = AnalysisOptions(channels={label: {"mvc_value": 1.0, "mvc_unit": "V"}})
    low = AnalysisOptions(
        channels={label: {"mvc_value": 1.0, "mvc_unit": "uV", "mvc_method": "reference_session"}}
    )
    h = analyze(recording, options=high).channels[0]
    lo = analyze(recording, options=low).channels[0]
    assert h.contractions_mvc_compliant == 0 and h.mvc_method == "given"
    assert lo.contractions_mvc_compliant == lo.contractions_total > 0
    assert lo.mvc_method == "reference_session"
    assert lo.mvc_source == "the patient's MVC reference session"


def test_an_mvc_written_in_the_file_comes_first():
    labels, data, _truth = ghostly_signals(seed=9, duration_s=30.0)
    content = c3d_bytes(labels, data, 990.0, mvc={labels[0]: 3e-3})
    options = AnalysisOptions(
        channels={"*": {"mvc_value": 1.0, "mvc_unit": "mV", "mvc_method": "patient_settings"}}
    )
    got = _by_name(analyze(content, options=options))
    assert got[labels[0]].mvc_method == "c3d_file"
    assert got[labels[0]].mvc_value == pytest.approx(3e-3)  # a float32 parameter
    assert got[labels[0]].mvc_source == "written in the recording (C3D file)"
    assert got[labels[1]].mvc_method == "patient_settings"
    assert got[labels[1]].mvc_value == pytest.approx(1e-3)


def test_options_survive_json_and_the_same_options_give_the_same_result(recording):
    label = analyze(recording).channels[0].name
    options = AnalysisOptions(
        mvc_percentage=70,
        channels={label: {"mvc_value": 0.5, "mvc_unit": "mV", "mvc_method": "patient_settings"}},
    )
    result = analyze(recording, options=options)
    again = AnalysisOptions.from_dict(result.processing["options"])
    assert again == options
    assert analyze(recording, options=again).to_dict() == result.to_dict()


@pytest.mark.parametrize(
    "channels,message",
    [
        ({"CH1": {"mvc_value": -1}}, "positive"),
        ({"CH1": {"mvc_value": 1, "mvc_unit": "N"}}, "unit"),
        ({"CH1": {"mvc_method": "session_estimate"}}, "method"),
        ({"CH1": {"mvc_percentage": 0}}, "mvc_percentage"),
        ({"CH1": {"expected_contractions": 0}}, "expected_contractions"),
        ({"CH1": {"colour": "red"}}, "unknown"),
    ],
)
def test_bad_targets_are_refused_with_a_reason(channels, message):
    with pytest.raises(InvalidOptionsError, match=message):
        AnalysisOptions(channels=channels)
