"""Mains interference: found where it shows, removed without touching the EMG around bursts."""

from __future__ import annotations

import numpy as np
import pytest

from emg_core.filters import bandpass, design_bandpass, rms_envelope
from emg_core.mains import find_mains, notch_sos, subtract_mains

RATE = 990.0


def _recording(seed: int = 0):
    """60 s of 5 µV rest noise, one strong 1 s burst at 30 s, and 49.5 Hz hum + 2 harmonics."""
    rng = np.random.default_rng(seed)
    n = round(60 * RATE)
    t = np.arange(n) / RATE
    emg = 5e-6 * rng.standard_normal(n)
    burst = (t >= 30.0) & (t < 31.0)
    emg[burst] += 500e-6 * rng.standard_normal(burst.sum())
    hum = sum(
        a * np.sin(2 * np.pi * f * t + p)
        for a, f, p in ((200e-6, 49.5, 0.3), (60e-6, 99.0, 1.1), (30e-6, 148.5, 2.0))
    )
    return t, emg, emg + hum, burst


def test_the_line_is_found_at_its_real_frequency_with_its_harmonics():
    _, _, raw, _ = _recording()
    mains = find_mains(raw, RATE, (20.0, 450.0))
    assert mains.fundamental_hz == pytest.approx(49.5, abs=0.05)
    assert [round(f, 1) for f in mains.harmonics_hz] == [49.5, 99.0, 148.5]
    assert 0.3 < mains.fraction < 0.9


def test_no_line_is_found_in_plain_emg():
    _, emg, _, _ = _recording()
    assert not find_mains(emg, RATE, (20.0, 450.0)).found


def test_subtracting_the_hum_leaves_the_rest_around_a_burst_at_rest():
    t, emg, raw, burst = _recording()
    mains = find_mains(raw, RATE, (20.0, 450.0))
    filt = design_bandpass(RATE)
    exclude = (t >= 29.7) & (t < 31.3)  # the burst and a guard, as the analysis marks them
    cleaned = rms_envelope(bandpass(subtract_mains(raw, RATE, mains, exclude), filt), RATE)
    reference = rms_envelope(bandpass(emg, filt), RATE)
    rest = np.median(reference)
    # next to the burst (100-300 ms away) the envelope is the rest's, not a halo of the burst
    near = ((t > 29.7) & (t < 29.9)) | ((t > 31.1) & (t < 31.3))
    assert np.max(cleaned[near]) < 2.5 * rest
    # the hum is gone elsewhere too, and the burst itself is kept
    far = (t > 5) & (t < 25)
    assert np.median(cleaned[far]) < 1.3 * rest
    assert np.median(cleaned[burst]) == pytest.approx(np.median(reference[burst]), rel=0.1)


def test_a_notch_would_have_left_a_halo_there():
    # why the hum is modelled rather than notched: the notch rings with the burst's own power
    t, _, raw, _ = _recording()
    mains = find_mains(raw, RATE, (20.0, 450.0))
    notched = rms_envelope(bandpass(raw, design_bandpass(RATE), notch_sos(mains, RATE)), RATE)
    rest = np.median(notched[(t > 5) & (t < 25)])
    near = ((t > 29.7) & (t < 29.9)) | ((t > 31.1) & (t < 31.3))
    assert np.max(notched[near]) > 2.5 * rest


def _c3d(raw: np.ndarray) -> bytes:
    from emg_core.synthetic import c3d_bytes

    return c3d_bytes(("CH1 Raw",), raw[None, :], RATE)


def _bursts_with_hum(hum_in_bursts: float) -> np.ndarray:
    """Eight 1 s bursts in 90 s under a 49.5 Hz hum that is ``hum_in_bursts`` x stronger in them."""
    rng = np.random.default_rng(7)
    n = round(90 * RATE)
    t = np.arange(n) / RATE
    active = np.zeros(n, dtype=bool)
    for k in range(8):
        active |= (t >= 5 + 10 * k) & (t < 6 + 10 * k)
    raw = 5e-6 * rng.standard_normal(n) + np.where(active, 300e-6, 0) * rng.standard_normal(n)
    amplitude = np.where(active, hum_in_bursts, 1.0) * 100e-6
    return raw + amplitude * np.sin(2 * np.pi * 49.5 * t)


def test_a_steady_hum_is_removed_and_the_channel_counted():
    from emg_core import analyze

    ch = analyze(_c3d(_bursts_with_hum(1.0))).channels[0]
    assert ch.usable and ch.mains_removed
    assert ch.mains_hz == pytest.approx(49.5, abs=0.1)
    assert ch.contractions_total == 8
    assert any("hum" in w for w in ch.warnings)


def test_a_hum_that_swells_in_the_contractions_makes_the_channel_untrustworthy():
    # the hum can only be measured at rest: when it grows tenfold with each movement, what is
    # left in the contractions is hum, and amplitudes and MVC would be the hum's
    from emg_core import analyze

    ch = analyze(_c3d(_bursts_with_hum(10.0))).channels[0]
    assert not ch.usable
    assert ch.contractions_total is None and ch.mvc_value is None
    assert "hum" in ch.warnings[0] and "too noisy" in ch.warnings[0]
