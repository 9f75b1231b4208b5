"""Invariants that must hold for any input (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emg_core import AnalysisOptions, analyze
from emg_core.detect import agreement, detect_contractions
from emg_core.filters import moving_mean, rms_envelope
from emg_core.synthetic import ghostly_recording


@st.composite
def envelopes(draw):
    """Piecewise-constant envelopes with noise: any mix of rest, bursts, gaps and long runs."""
    rate = draw(st.sampled_from([990.0, 1000.0, 2000.0]))
    blocks = draw(
        st.lists(st.tuples(st.floats(0.005, 12.0), st.floats(0.0, 50.0)), min_size=1, max_size=25)
    )
    seed = draw(st.integers(0, 2**32 - 1))
    parts = [np.full(max(1, int(d * rate)), level) for d, level in blocks]
    env = np.concatenate(parts)
    noise = np.random.default_rng(seed).random(env.size) * draw(st.floats(0.0, 2.0))
    return rate, np.abs(env + 1.0 + noise)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes(), st.floats(0.05, 0.5), st.floats(0.0, 0.5), st.floats(2.0, 12.0))
def test_detections_are_ordered_disjoint_pairs_within_the_limits(case, min_s, gap_s, max_s):
    rate, env = case
    det = detect_contractions(
        env, rate, min_duration_s=min_s, merge_gap_s=gap_s, max_duration_s=max_s
    )
    s, e = det.starts, det.ends
    assert s.shape == e.shape  # onsets and offsets always come as pairs
    assert np.all(s >= 0) and np.all(e <= env.size)
    assert np.all(e > s)  # positive durations
    assert np.all(e - s >= round(min_s * rate))
    assert np.all(e - s <= round(max_s * rate))
    assert np.all(s[1:] >= e[:-1])  # ordered, never overlapping


@settings(max_examples=60, deadline=None)
@given(envelopes(), st.integers(0, 2**32 - 1))
def test_agreement_is_a_fraction(case, seed):
    rate, env = case
    det = detect_contractions(env, rate)
    hint = np.where(np.random.default_rng(seed).random(env.size) > 0.7, 1.0, 0.0)
    score = agreement(det.starts, det.ends, hint, rate)
    assert score is None or 0.0 <= score <= 1.0
    assert agreement(det.starts, det.ends, (np.arange(env.size) % 7 == 99) * 1.0, rate) in (
        None,
        0.0,
    )


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 5000),
    st.floats(0.001, 0.3),
    st.sampled_from([990.0, 2000.0]),
    st.integers(0, 1000),
)
def test_moving_mean_equals_the_direct_mean_of_the_window(n, window_s, rate, seed):
    x = np.random.default_rng(seed).standard_normal((2, n))
    got = moving_mean(x, rate, window_s)
    half = round(window_s * rate / 2)
    for i in sorted({0, n // 2, n - 1}):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        np.testing.assert_allclose(got[:, i], x[:, lo:hi].mean(axis=1), atol=1e-12)
    env = rms_envelope(x, rate, window_s)
    assert env.shape == x.shape and np.all(env >= 0)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 10_000),
    rate=st.sampled_from([990.0, 1000.0, 2000.0]),
    duration=st.floats(5.0, 40.0),
    snr=st.floats(10.0, 45.0),
    expected=st.integers(1, 20),
    pct=st.floats(10.0, 120.0),
)
def test_session_results_satisfy_the_database_contract(seed, rate, duration, snr, expected, pct):
    content, _ = ghostly_recording(seed=seed, duration_s=duration, rate=rate, snr_db=snr)
    opts = AnalysisOptions(expected_contractions=expected, mvc_percentage=pct)
    result = analyze(content, options=opts)
    assert 0.0 <= result.overall_compliance <= 1.0
    assert result.symmetry is None or 0.0 <= result.symmetry <= 1.0
    for ch in result.channels:
        if not ch.usable:
            assert ch.warnings and ch.contractions_total is None and ch.compliance_rate is None
            continue
        for rate_name in ("completion_rate", "intensity_rate", "duration_rate", "compliance_rate"):
            assert 0.0 <= getattr(ch, rate_name) <= 1.0, rate_name
        assert 0.0 <= ch.signal_quality <= 1.0
        assert ch.activation_agreement is None or 0.0 <= ch.activation_agreement <= 1.0
        assert ch.contractions_total == len(ch.contractions)
        assert ch.contractions_good <= min(
            ch.contractions_mvc_compliant, ch.contractions_duration_compliant
        )
        assert ch.mvc_threshold == ch.mvc_value * pct / 100
        assert ch.time_under_tension_ms == sum(c.duration_ms for c in ch.contractions)
        previous_end = -1.0
        for k, c in enumerate(ch.contractions):
            assert c.index == k
            assert c.start_ms >= previous_end and c.end_ms > c.start_ms
            assert abs(c.duration_ms - (c.end_ms - c.start_ms)) < 1e-6
            assert c.peak_amplitude >= c.mean_amplitude >= 0
            assert c.is_good == (c.meets_mvc and c.meets_duration)
            # judged on a sustained window, which never exceeds the peak nor falls below the mean
            if c.meets_mvc:
                assert c.peak_amplitude >= ch.mvc_threshold
            if c.mean_amplitude >= ch.mvc_threshold:
                assert c.meets_mvc
            previous_end = c.end_ms
