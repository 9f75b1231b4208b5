"""Spectra of contractions and the fatigue read from them.

Only contractions carry fatigue information: rest is noise. Each contraction's Welch PSD is the
mean of the clean (unmasked) Hann segments inside it; its MPF and MDF follow, and, for
contractions long enough, their trend within it. Across the session the trend of the
per-contraction values gives the fatigue slopes. Every per-contraction quantity is computed for
all contractions at once from prefix sums over the segments, so the work does not grow with the
number of contractions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, cast

import numpy as np

from .filters import prefix_sum
from .spectral import (
    SegmentSpectra,
    fi_nsm5,
    mean_frequency,
    median_frequency,
    segment_grid,
)
from .spectral import trend as fit_trend

#: fewest clean segments a within-contraction trend is fitted on
MIN_TREND_SEGMENTS = 4


def segments_within(
    starts: np.ndarray, ends: np.ndarray, n: int, rate: float, segment_s: float
) -> np.ndarray:
    """Indices, on the Welch segment grid, of the segments the contractions' spectra use.

    A contraction uses the segments lying wholly inside it; one shorter than a segment uses the
    first segment starting at or after its centre minus half a segment.
    """
    nperseg, step, count = segment_grid(n, rate, segment_s)
    if count == 0 or starts.size == 0:
        return np.zeros(0, dtype=np.int64)
    first = -(-starts // step)
    last = (ends - nperseg) // step  # inclusive
    parts = [np.arange(a, b + 1) for a, b in zip(first.tolist(), last.tolist(), strict=True)]
    short = last < first
    if short.any():
        centre = (starts[short] + ends[short]) / 2 - nperseg / 2
        parts.append(np.clip(np.ceil(centre / step), 0, count - 1).astype(np.int64))
    return np.unique(np.concatenate(parts)).astype(np.int64)


def clean_segments(spectra: SegmentSpectra, masked: np.ndarray) -> np.ndarray:
    """Segments that hold no masked sample (an artefact's power must not reach a spectrum)."""
    if spectra.starts.size == 0:
        return np.zeros(0, dtype=bool)
    if not masked.any():
        return np.ones(spectra.starts.size, dtype=bool)
    csum = prefix_sum(masked, axis=0)
    ends = np.minimum(spectra.starts + spectra.nperseg, masked.size)
    return np.asarray((csum[ends] - csum[spectra.starts]) == 0)


@dataclass(frozen=True, slots=True)
class ContractionSpectra:
    """Spectral values of each contraction (``nan`` where it has no clean segment).

    Attributes
    ----------
    psd : ndarray, shape (n_contractions, n_freqs)
        Welch PSD of each contraction.
    has : ndarray of bool
        Whether the contraction has a spectrum.
    mpf, mdf : ndarray
        Its mean and median power frequency, Hz.
    mpf_slope, mdf_slope : ndarray
        Their least-squares trend within it, Hz/s (``nan`` unless it is at least
        ``min_trend`` samples long and holds ``MIN_TREND_SEGMENTS`` clean segments).
    """

    psd: np.ndarray
    has: np.ndarray
    mpf: np.ndarray
    mdf: np.ndarray
    mpf_slope: np.ndarray
    mdf_slope: np.ndarray


def _range_slopes(
    t: np.ndarray, y: np.ndarray, weight: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Least-squares slopes of ``y`` over ``t`` on each segment range ``[lo, hi)``, from
    prefix sums (``weight`` 0 drops a segment); ``nan`` with too few points."""
    w = weight & np.isfinite(y)
    y = np.where(w, y, 0.0)
    tw = np.where(w, t, 0.0)
    s0, st, sy, stt, sty = (
        prefix_sum(v, axis=0) for v in (w.astype(np.float64), tw, y, tw * t, tw * y)
    )

    def between(p: np.ndarray) -> np.ndarray:
        return np.asarray(p[hi] - p[lo])

    n, a, b = between(s0), between(st), between(sy)
    den = n * between(stt) - a * a
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * between(sty) - a * b) / den
    return np.where((n >= MIN_TREND_SEGMENTS) & (den > 0), slope, np.nan)


def contraction_spectra(
    spectra: SegmentSpectra,
    ok: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    min_trend: int,
) -> ContractionSpectra:
    """The spectral values of every contraction ``[starts[i], ends[i])`` (signal samples).

    Parameters
    ----------
    spectra : SegmentSpectra
        Segment periodograms (all of them, or at least those of :func:`segments_within`).
    ok : ndarray of bool
        Clean segments (:func:`clean_segments`).
    starts, ends : ndarray of int
        The contractions.
    min_trend : int
        Shortest contraction, in samples, given a within-contraction trend.
    """
    k, nf = starts.size, spectra.freqs.size
    nan = np.full(k, np.nan)
    if spectra.starts.size == 0 or k == 0:
        return ContractionSpectra(np.full((k, nf), np.nan), np.zeros(k, bool), nan, nan, nan, nan)
    lo = np.searchsorted(spectra.starts, starts, side="left")
    hi = np.searchsorted(spectra.starts, ends - spectra.nperseg, side="right")
    okf = ok.astype(np.float64)
    ok_sum = prefix_sum(okf, axis=0)
    count = ok_sum[np.maximum(hi, lo)] - ok_sum[lo]
    sums = prefix_sum(spectra.psd * okf[:, None], axis=0)
    wide = hi > lo
    psd = np.full((k, nf), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        psd[wide] = (sums[hi[wide]] - sums[lo[wide]]) / count[wide, None]
    # shorter than a segment: the segment centred on it, if clean
    centre = (starts + ends) / 2 - spectra.nperseg / 2
    near = np.clip(np.searchsorted(spectra.starts, centre), 0, spectra.starts.size - 1)
    short = ~wide & ok[near]
    psd[short] = spectra.psd[near[short]]
    has = np.where(wide, count > 0, short)
    psd[~has] = np.nan
    mpf, mdf = nan.copy(), nan.copy()
    if has.any():
        mpf[has] = mean_frequency(spectra.freqs, psd[has])
        mdf[has] = median_frequency(spectra.freqs, psd[has])
    mpf_slope, mdf_slope = nan.copy(), nan.copy()
    long = (ends - starts >= min_trend) & wide
    if long.any():
        t = (spectra.starts + spectra.nperseg / 2) / spectra.rate
        seg_mpf = mean_frequency(spectra.freqs, spectra.psd)
        seg_mdf = median_frequency(spectra.freqs, spectra.psd)
        mpf_slope[long] = _range_slopes(t, seg_mpf, ok, lo[long], hi[long])
        mdf_slope[long] = _range_slopes(t, seg_mdf, ok, lo[long], hi[long])
    return ContractionSpectra(psd, has, mpf, mdf, mpf_slope, mdf_slope)


class SessionFatigue(TypedDict):
    """The ``ChannelResult`` fields :func:`session_fatigue` fills (``None``: not measurable)."""

    mpf_hz: float | None
    mdf_hz: float | None
    fi_nsm5: float | None
    fi_nsm5_relative: float | None
    mpf_slope_hz_per_s: float | None
    mdf_slope_hz_per_s: float | None
    mpf_slope_pct_per_s: float | None
    mdf_slope_pct_per_s: float | None
    fatigue_reason: str | None


def session_fatigue(
    cs: ContractionSpectra,
    freqs: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    rate: float,
    min_contractions: int,
) -> SessionFatigue:
    """Channel spectral summary and fatigue trends across the session's contractions.

    Returns the ``ChannelResult`` fields ``mpf_hz``, ``mdf_hz``, ``fi_nsm5``,
    ``fi_nsm5_relative``, the four slope fields and ``fatigue_reason`` (why the trends are
    ``None``, when they are).
    """
    out = cast(SessionFatigue, dict.fromkeys(SessionFatigue.__annotations__))  # all None
    n_have = int(np.count_nonzero(cs.has))
    if n_have == 0:
        out["fatigue_reason"] = (
            "no contraction to measure"
            if starts.size == 0
            else "no clean spectrum in any contraction"
        )
        return out
    psd = cs.psd[cs.has]
    weights = (ends - starts)[cs.has].astype(np.float64)
    pooled = np.average(psd, axis=0, weights=weights)
    out["mpf_hz"] = _finite(mean_frequency(freqs, pooled))
    out["mdf_hz"] = _finite(median_frequency(freqs, pooled))
    out["fi_nsm5"] = _finite(fi_nsm5(freqs, pooled))
    if n_have < min_contractions:
        out["fatigue_reason"] = (
            f"{n_have} contraction{'s' if n_have != 1 else ''} with a clean spectrum: "
            f"a fatigue trend needs {min_contractions}"
        )
        return out
    t = ((starts + ends) / 2 / rate)[cs.has]
    if (tr := fit_trend(t, cs.mpf[cs.has], min_contractions)) is not None:
        out["mpf_slope_hz_per_s"] = _finite(tr.slope)
        out["mpf_slope_pct_per_s"] = _finite(tr.slope_pct)
    if (tr := fit_trend(t, cs.mdf[cs.has], min_contractions)) is not None:
        out["mdf_slope_hz_per_s"] = _finite(tr.slope)
        out["mdf_slope_pct_per_s"] = _finite(tr.slope_pct)
    # FI_nsm5 grows multiplicatively with fatigue (f ** -6): its trend is fitted on its logarithm,
    # where a straight line through strongly rising values cannot start below zero
    with np.errstate(divide="ignore", invalid="ignore"):
        log_fi = np.log(fi_nsm5(freqs, psd))
    if (tr := fit_trend(t, log_fi, min_contractions)) is not None:
        out["fi_nsm5_relative"] = _finite(np.exp(tr.last - tr.first))
    return out


def _finite(value: float | np.floating | np.ndarray | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


__all__ = [
    "ContractionSpectra",
    "clean_segments",
    "contraction_spectra",
    "segments_within",
    "session_fatigue",
]
