"""Spectral indices against closed forms, and fatigue slopes on a known downward shift."""

from __future__ import annotations

import numpy as np
import pytest

from emg_core.fatigue import clean_segments, contraction_spectra, session_fatigue
from emg_core.spectral import (
    fi_nsm5,
    mean_frequency,
    median_frequency,
    segment_spectra,
    trend,
)


def flat_band_noise(rate: float, seconds: float, f1: float, f2: float, seed: int) -> np.ndarray:
    """Random-phase noise whose spectrum is exactly flat on [f1, f2] and zero elsewhere."""
    n = int(seconds * rate)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    band = (freqs >= f1) & (freqs <= f2)
    spectrum = np.zeros(freqs.size, dtype=complex)
    phases = np.random.default_rng(seed).random(int(band.sum()))
    spectrum[band] = np.exp(2j * np.pi * phases)
    return np.fft.irfft(spectrum, n)


@pytest.mark.parametrize("rate", [990.0, 1000.0, 2000.0])
@pytest.mark.parametrize(("f1", "f2"), [(60.0, 300.0), (30.0, 150.0)])
def test_indices_of_a_flat_band_match_their_closed_forms(rate, f1, f2):
    x = flat_band_noise(rate, 120.0, f1, f2, seed=int(rate + f1))
    spectra = segment_spectra(x, rate, (20.0, 450.0))
    psd = spectra.psd.mean(axis=0)
    # flat PSD on [f1, f2]: mean = median = midpoint; FI = mean(1/f) / mean(f^5)
    midpoint = (f1 + f2) / 2
    fi_exact = (np.log(f2 / f1) / (f2 - f1)) / ((f2**6 - f1**6) / (6 * (f2 - f1)))
    assert mean_frequency(spectra.freqs, psd) == pytest.approx(midpoint, rel=0.01)
    assert median_frequency(spectra.freqs, psd) == pytest.approx(midpoint, rel=0.01)
    assert fi_nsm5(spectra.freqs, psd) == pytest.approx(fi_exact, rel=0.01)


def test_indices_of_a_sloped_spectrum_match_their_closed_forms():
    # PSD proportional to f on [f1, f2]: shaping flat noise's amplitude by sqrt(f)
    rate, f1, f2, n = 2000.0, 40.0, 400.0, 240_000
    freqs = np.fft.rfftfreq(n, 1 / rate)
    band = (freqs >= f1) & (freqs <= f2)
    spectrum = np.zeros(freqs.size, dtype=complex)
    phases = np.random.default_rng(3).random(int(band.sum()))
    spectrum[band] = np.sqrt(freqs[band]) * np.exp(2j * np.pi * phases)
    spectra = segment_spectra(np.fft.irfft(spectrum, n), rate, (20.0, 450.0))
    psd = spectra.psd.mean(axis=0)
    mpf_exact = (2 / 3) * (f2**3 - f1**3) / (f2**2 - f1**2)
    mdf_exact = np.sqrt((f1**2 + f2**2) / 2)  # half of the integral of f df
    fi_exact = (f2 - f1) / ((f2**7 - f1**7) / 7)
    assert mean_frequency(spectra.freqs, psd) == pytest.approx(mpf_exact, rel=0.01)
    assert median_frequency(spectra.freqs, psd) == pytest.approx(mdf_exact, rel=0.01)
    assert fi_nsm5(spectra.freqs, psd) == pytest.approx(fi_exact, rel=0.01)


def test_median_frequency_interpolates_inside_the_bin():
    freqs = np.array([10.0, 20.0, 30.0, 40.0])
    # cumulative 1, 2, 5, 6 of 6: half (3) lies a third into the 30 Hz bin [25, 35]
    psd = np.array([1.0, 1.0, 3.0, 1.0])
    assert median_frequency(freqs, psd) == pytest.approx(25.0 + 10.0 / 3)


def test_indices_are_nan_without_power_and_vectorised_over_rows():
    freqs = np.array([50.0, 100.0, 150.0])
    psd = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert np.isnan(mean_frequency(freqs, psd)[0])
    assert mean_frequency(freqs, psd)[1] == pytest.approx(100.0)
    assert np.isnan(fi_nsm5(freqs, psd)[0])


@pytest.mark.parametrize("rate", [990.0, 2000.0])
@pytest.mark.parametrize("shift_hz_per_s", [0.5, 2.0])
def test_fatigue_slope_has_the_sign_and_size_of_a_known_downward_shift(rate, shift_hz_per_s):
    # a 20 Hz wide comb of random-phase tones whose centre slides down linearly over 60 s
    seconds, f_start = 60.0, 200.0
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(7)
    offsets = np.linspace(-10, 10, 81)
    phases = rng.uniform(0, 2 * np.pi, offsets.size)
    centre_phase = 2 * np.pi * (f_start * t - shift_hz_per_s * t**2 / 2)
    tones = zip(offsets, phases, strict=True)
    x = np.sum([np.sin(centre_phase + 2 * np.pi * d * t + p) for d, p in tones], axis=0)
    spectra = segment_spectra(x, rate, (20.0, 450.0))
    ok = np.ones(spectra.starts.size, dtype=bool)
    # within one long contraction: the slope of the segments' MDF and MPF
    whole = contraction_spectra(spectra, ok, np.array([0]), np.array([n]), min_trend=1)
    for slope in (whole.mdf_slope[0], whole.mpf_slope[0]):
        assert slope == pytest.approx(-shift_hz_per_s, rel=0.05)
    # across a session of ten 4 s contractions 6 s apart: the trend of per-contraction values
    starts = (np.arange(10) * 6 * rate).astype(np.int64)
    ends = starts + int(4 * rate)
    each = contraction_spectra(spectra, ok, starts, ends, min_trend=n)
    fatigue = session_fatigue(each, spectra.freqs, starts, ends, rate, min_contractions=3)
    assert fatigue["fatigue_reason"] is None
    for key in ("mdf_slope_hz_per_s", "mpf_slope_hz_per_s"):
        assert fatigue[key] == pytest.approx(-shift_hz_per_s, rel=0.05)
    # %/s is relative to the fitted value at the first contraction's centre (2 s)
    expected_pct = -100 * shift_hz_per_s / (f_start - shift_hz_per_s * 2.0)
    assert fatigue["mdf_slope_pct_per_s"] == pytest.approx(expected_pct, rel=0.05)
    assert fatigue["fi_nsm5_relative"] > 1  # FI_nsm5 rises as the spectrum compresses


def test_too_few_contractions_give_no_trend_and_say_why():
    rng = np.random.default_rng(3)
    rate = 1000.0
    x = rng.standard_normal(20_000)
    spectra = segment_spectra(x, rate, (20.0, 450.0))
    ok = np.ones(spectra.starts.size, dtype=bool)
    starts, ends = np.array([1000, 8000]), np.array([3000, 10000])
    cs = contraction_spectra(spectra, ok, starts, ends, min_trend=10**9)
    fatigue = session_fatigue(cs, spectra.freqs, starts, ends, rate, min_contractions=3)
    assert fatigue["mdf_slope_hz_per_s"] is None and fatigue["mdf_hz"] is not None
    assert "2 contractions" in fatigue["fatigue_reason"] and "needs 3" in fatigue["fatigue_reason"]


def test_a_contraction_over_masked_segments_has_no_spectrum():
    rng = np.random.default_rng(4)
    rate = 1000.0
    x = rng.standard_normal(10_000)
    spectra = segment_spectra(x, rate, (20.0, 450.0))
    masked = np.zeros(x.size, dtype=bool)
    masked[2000:4000] = True
    ok = clean_segments(spectra, masked)
    cs = contraction_spectra(spectra, ok, np.array([2100, 6000]), np.array([3900, 8000]), 10**9)
    assert not cs.has[0] and np.isnan(cs.mdf[0])
    assert cs.has[1] and 20 < cs.mdf[1] < 450


def test_trend_needs_three_finite_points():
    assert trend(np.array([0.0, 1.0]), np.array([1.0, 2.0])) is None
    assert trend(np.array([0.0, 1.0, 2.0]), np.array([1.0, np.nan, 2.0])) is None
    fit = trend(np.array([0.0, 1.0, 2.0, 3.0]), np.array([10.0, 8.0, 6.0, 4.0]))
    assert fit.slope == pytest.approx(-2.0)
    assert fit.slope_pct == pytest.approx(-20.0)


def test_per_contraction_spectra_and_channel_fatigue_through_analyze():
    from emg_core import analyze
    from emg_core.synthetic import ghostly_recording

    content, truth = ghostly_recording(seed=2, duration_s=60, rate=2000, snr_db=40)
    result = analyze(content)
    # the loops below assert nothing over an empty list: pin what they run over
    assert [c.name for c in result.channels] == list(truth.channels)
    for channel in result.channels:
        # the generator's EMG is white noise through a 30-250 Hz band-pass: MPF near 145 Hz
        assert 110 < channel.mpf_hz < 180
        assert channel.mdf_hz < channel.mpf_hz  # right-skewed EMG spectrum
        assert channel.fi_nsm5 > 0
        assert len(channel.contractions) == len(truth.bursts_for(channel.name)) > 0
        for c in channel.contractions:
            assert 90 < c.mpf_hz < 200
            assert 20 <= c.mdf_hz <= 450
        # no fatigue was put in: slopes are small
        assert abs(channel.mdf_slope_pct_per_s) < 0.5
