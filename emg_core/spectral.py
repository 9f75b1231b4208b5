"""Spectral fatigue indices from a Welch power spectral density restricted to the pass band.

One pass computes the periodogram of every Hann-windowed segment (default 250 ms, 50 % overlap)
of a channel (or of the segments asked for), keeping only the bins inside the band-pass; every
later average (per contraction, per channel; see ``emg_core.fatigue``) is a mean of those segment
spectra, i.e. a Welch estimate over that stretch. Indices:

* mean power frequency ``MPF = sum(f P) / sum(P)``;
* median frequency ``MDF``, where the cumulative power reaches half, interpolated linearly inside
  its bin (each bin's power spread evenly over ``[f - df/2, f + df/2]``);
* Dimitrov's ``FI_nsm5 = sum(f**-1 P) / sum(f**5 P)`` (Dimitrov et al., 2006), in Hz**-6.

Trends are least-squares lines over time, in units per second and in %/s of the line's value at
the first point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

_CHUNK = 512  # segments transformed at once: bounds the temporary copy to ~chunk x nperseg


@dataclass(frozen=True, slots=True)
class SegmentSpectra:
    """Periodograms of overlapping segments of one channel.

    Attributes
    ----------
    freqs : ndarray, shape (n_freqs,)
        In-band bin centres, Hz.
    psd : ndarray, shape (n_segments, n_freqs)
        One-sided power spectral density of each segment, unit**2/Hz.
    starts : ndarray, shape (n_segments,)
        First sample of each segment.
    nperseg : int
        Segment length in samples.
    rate : float
        Sampling rate, Hz.
    """

    freqs: np.ndarray
    psd: np.ndarray
    starts: np.ndarray
    nperseg: int
    rate: float


def segment_spectra(
    x: np.ndarray,
    rate: float,
    band: tuple[float, float],
    *,
    segment_s: float = 0.25,
    overlap: float = 0.5,
    only: np.ndarray | None = None,
) -> SegmentSpectra:
    """Hann-windowed periodograms of overlapping segments, restricted to ``band``.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        Band-passed EMG.
    rate : float
        Sampling rate in Hz.
    band : (float, float)
        Lowest and highest frequency kept, Hz.
    segment_s : float
        Segment length, seconds (shortened to the signal when it is shorter).
    overlap : float
        Fraction of a segment shared with the next one.
    only : ndarray of int, optional
        Sorted indices, on the segment grid, of the only segments to compute (e.g. those
        inside contractions); see :func:`segment_grid`.

    Returns
    -------
    SegmentSpectra
    """
    nperseg, step, _ = segment_grid(x.size, rate, segment_s, overlap)
    freqs = scipy.fft.rfftfreq(nperseg, 1 / rate) if nperseg else np.empty(0)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    freqs = freqs[keep]
    if nperseg < 8:
        return SegmentSpectra(
            freqs, np.empty((0, freqs.size)), np.empty(0, np.int64), nperseg, rate
        )
    window = signal.get_window("hann", nperseg)
    # density scaling as scipy.signal.welch: one-sided, unit**2/Hz
    scale = 2.0 / (rate * np.sum(window**2))
    segments = sliding_window_view(x, nperseg)[::step]
    starts = np.arange(segments.shape[0], dtype=np.int64) * step
    if only is not None:
        only = np.asarray(only, dtype=np.int64)
        only = only[(only >= 0) & (only < segments.shape[0])]
        segments, starts = segments[only], starts[only]
    psd = np.empty((segments.shape[0], freqs.size), dtype=np.float64)
    for i in range(0, segments.shape[0], _CHUNK):
        chunk = segments[i : i + _CHUNK]
        chunk = (chunk - chunk.mean(axis=1, keepdims=True)) * window
        spec = scipy.fft.rfft(chunk, axis=1)[:, keep]
        psd[i : i + _CHUNK] = (spec.real**2 + spec.imag**2) * scale
    return SegmentSpectra(freqs, psd, starts, nperseg, rate)


def segment_grid(
    n: int, rate: float, segment_s: float = 0.25, overlap: float = 0.5
) -> tuple[int, int, int]:
    """``(nperseg, step, n_segments)`` of the segment grid :func:`segment_spectra` uses."""
    nperseg = max(8, round(segment_s * rate))
    if n < nperseg:
        nperseg = n
    step = max(1, nperseg - round(overlap * nperseg))
    count = (n - nperseg) // step + 1 if nperseg >= 8 and n >= nperseg else 0
    return nperseg, step, count


def mean_frequency(freqs: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Mean power frequency along the last axis (Hz); ``nan`` where there is no power."""
    total = psd.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (psd * freqs).sum(axis=-1) / total, np.nan)


def median_frequency(freqs: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Median frequency along the last axis (Hz), interpolated inside its bin.

    Each bin's power is taken as spread evenly over ``[f - df/2, f + df/2]``; the result is where
    that piecewise-linear cumulative power reaches half the total.
    """
    psd = np.asarray(psd, dtype=np.float64)
    if freqs.size == 0:
        return np.full(psd.shape[:-1], np.nan)
    df = float(freqs[1] - freqs[0]) if freqs.size > 1 else 1.0
    cum = np.cumsum(psd, axis=-1)
    total = cum[..., -1]
    half = total / 2
    k = np.argmax(cum >= half[..., None], axis=-1)
    below = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0)[..., None], -1)[..., 0], 0)
    pk = np.take_along_axis(psd, k[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(pk > 0, (half - below) / pk, 0.5)
        return np.where(total > 0, freqs[k] - df / 2 + frac * df, np.nan)


def fi_nsm5(freqs: np.ndarray, psd: np.ndarray) -> np.ndarray:
    """Dimitrov's spectral fatigue index ``sum(f**-1 P) / sum(f**5 P)`` (Hz**-6)."""
    f = np.asarray(freqs, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        num = (psd / f).sum(axis=-1)
        den = (psd * f**5).sum(axis=-1)
        return np.where(den > 0, num / den, np.nan)


@dataclass(frozen=True, slots=True)
class Trend:
    """Least-squares line ``y = slope * t + intercept`` through a series.

    Attributes
    ----------
    slope : float
        Units of y per second.
    slope_pct : float
        ``slope`` as % per second of the line's value at the first time.
    first, last : float
        The line's values at the first and last time.
    """

    slope: float
    slope_pct: float
    first: float
    last: float


def trend(times_s: np.ndarray, values: np.ndarray, min_points: int = 3) -> Trend | None:
    """Least-squares trend of ``values`` over ``times_s``; ``None`` with too few finite points."""
    ok = np.isfinite(values) & np.isfinite(times_s)
    t, y = times_s[ok], values[ok]
    if t.size < min_points or np.ptp(t) == 0:
        return None
    tc = t - t.mean()
    slope = float(np.dot(tc, y - y.mean()) / np.dot(tc, tc))
    first = float(y.mean() + slope * (t[0] - t.mean()))
    last = float(y.mean() + slope * (t[-1] - t.mean()))
    pct = 100.0 * slope / first if first != 0 else float("nan")
    return Trend(slope, pct, first, last)


__all__ = [
    "SegmentSpectra",
    "Trend",
    "fi_nsm5",
    "mean_frequency",
    "median_frequency",
    "segment_grid",
    "segment_spectra",
    "trend",
]
