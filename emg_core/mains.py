"""Mains interference: find the power-line frequency where it really shows, measure, remove it.

The line is looked for near 50 and 60 Hz but not at exactly those: a recording whose declared
sampling rate is off shows its hum shifted by the same factor (GHOSTLY files declare 990 Hz and
show hum at about 49.5 Hz and its multiples). The spectrum is a Welch estimate with long segments
(resolution about 0.25 Hz), so the line and its harmonics stand out of the EMG beneath them.

Removal subtracts a model of the hum, not a band of the spectrum. A notch filter also takes
the EMG's own power at the line's frequency, and because it is narrow it rings: each burst gets
a halo of that power spread over a few hundred ms around it, which on a hum-dominated channel
stands several times above rest and drags every contraction edge outwards. Instead each line's
amplitude and phase are measured in short blocks of whole periods (which null DC and the other
harmonics) wherever the muscle is at rest, followed smoothly through the bursts, and the
sinusoids so modelled are subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

#: where a fundamental is searched for, Hz (50 and 60 Hz grids, with a few % of rate error)
SEARCH_BANDS = ((47.5, 52.5), (57.0, 63.0))
#: a line must stand this many times above the spectrum around it to be mains
MIN_PROMINENCE = 8.0
#: half-width of a line when its power is measured, Hz
LINE_HALF_WIDTH_HZ = 1.0
#: -3 dB width of each notch, Hz
NOTCH_WIDTH_HZ = 1.0
#: at most this many segments feed the high-resolution spectrum (bounds the work on long files)
MAX_SEGMENTS = 32


@dataclass(frozen=True, slots=True)
class Mains:
    """The mains interference found in one channel.

    Attributes
    ----------
    fundamental_hz : float or None
        Measured line frequency, ``None`` when no line stands out.
    harmonics_hz : tuple of float
        The lines (fundamental included) that stand out, each measured where it peaks.
    fraction : float
        Share of the in-band power that lies on the lines above the spectrum beneath them, 0..1.
    """

    fundamental_hz: float | None
    harmonics_hz: tuple[float, ...]
    fraction: float

    @property
    def found(self) -> bool:
        return self.fundamental_hz is not None


def fine_psd(
    x: np.ndarray, rate: float, resolution_hz: float = 0.25, top_hz: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch spectra with segments long enough for ``resolution_hz``.

    Returns ``(freqs, median_psd, mean_psd)``. The median over segments finds lines: a few
    segments holding a strong burst would otherwise make the mean as rough as one periodogram,
    whose random peaks stand 8 times above their neighbours often enough to be taken for hum.
    The mean measures power. Segments overlap by half; long recordings are sampled, at most
    ``MAX_SEGMENTS`` segments spread over the whole signal. Bins above ``top_hz`` are dropped.
    """
    n = x.size
    nperseg = int(2 ** np.ceil(np.log2(rate / resolution_hz)))
    nperseg = min(nperseg, n)
    if nperseg < 16:
        return np.empty(0), np.empty(0), np.empty(0)
    count = max(1, 2 * (n - nperseg) // nperseg + 1)
    starts = np.linspace(0, n - nperseg, min(count, MAX_SEGMENTS)).astype(np.int64)
    window = signal.get_window("hann", nperseg)
    scale = 2.0 / (rate * np.sum(window**2))
    segs = np.stack([x[s : s + nperseg] for s in starts.tolist()])
    segs = (segs - segs.mean(axis=1, keepdims=True)) * window
    freqs = np.fft.rfftfreq(nperseg, 1 / rate)
    keep = freqs.size if top_hz is None else int(np.searchsorted(freqs, top_hz, side="right"))
    spec = np.fft.rfft(segs, axis=1)[:, :keep]
    power = (spec.real**2 + spec.imag**2) * scale
    return freqs[:keep], np.median(power, axis=0), power.mean(axis=0)


def _peak(freqs: np.ndarray, psd: np.ndarray, lo: float, hi: float) -> tuple[float | None, float]:
    """Frequency (parabolic interpolation on log power) and prominence of the peak in [lo, hi]."""
    inside = np.flatnonzero((freqs >= lo) & (freqs <= hi))
    if inside.size < 3:
        return None, 0.0
    k = int(inside[np.argmax(psd[inside])])
    around = (np.abs(freqs - freqs[k]) <= 10.0) & (np.abs(freqs - freqs[k]) > 2.0)
    floor = float(np.median(psd[around])) if around.any() else 0.0
    prominence = float(psd[k] / floor) if floor > 0 else float("inf") if psd[k] > 0 else 0.0
    f = float(freqs[k])
    if 0 < k < freqs.size - 1 and np.all(psd[k - 1 : k + 2] > 0):
        a, b, c = np.log(psd[k - 1 : k + 2])
        den = a - 2 * b + c
        if den < 0:
            f += 0.5 * (a - c) / den * float(freqs[1] - freqs[0])
    return f, prominence


def find_mains(x: np.ndarray, rate: float, band: tuple[float, float]) -> Mains:
    """Find the mains line and its harmonics in one channel.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        The signal (raw or band-passed; a DC offset does not matter).
    rate : float
        Sampling rate, Hz.
    band : (float, float)
        The analysis pass band, Hz: harmonics are looked for and power is measured inside it.

    Returns
    -------
    Mains
    """
    # the top of the search bands or of the pass band, plus the width a peak is judged on
    top = max(band[1], SEARCH_BANDS[-1][1]) + 12.0
    freqs, psd, mean_psd = fine_psd(x, rate, top_hz=top)
    none = Mains(None, (), 0.0)
    if freqs.size == 0:
        return none
    best = None
    for lo, hi in SEARCH_BANDS:
        f, prom = _peak(freqs, psd, lo, hi)
        if f is not None and prom >= MIN_PROMINENCE and (best is None or prom > best[1]):
            best = (f, prom)
    if best is None:
        return none
    f0 = best[0]
    lines: list[float] = []
    for k in range(1, int(band[1] // f0) + 1):
        # later harmonics drift further: the search widens with k
        tol = max(0.5, 0.004 * k * f0)
        fk, prom = _peak(freqs, psd, k * f0 - tol, k * f0 + tol)
        if fk is not None and band[0] <= fk <= band[1] and prom >= MIN_PROMINENCE:
            lines.append(fk)
    if not lines:
        return none
    return Mains(float(f0), tuple(lines), _line_share(freqs, mean_psd, band, f0))


def _line_share(
    freqs: np.ndarray, mean_psd: np.ndarray, band: tuple[float, float], f0: float
) -> float:
    """Share of the in-band power within a line's width of ``f0`` and its harmonics, above the
    spectrum around each (the EMG beneath a line is not interference)."""
    in_band = (freqs >= band[0]) & (freqs <= band[1])
    total = float(mean_psd[in_band].sum())
    if total <= 0:
        return 0.0
    excess = 0.0
    for k in range(1, int(band[1] // f0) + 1):
        tol = max(0.5, 0.004 * k * f0)
        inside = np.flatnonzero((freqs >= k * f0 - tol) & (freqs <= k * f0 + tol))
        if inside.size == 0 or not band[0] <= k * f0 <= band[1]:
            continue
        fk = float(freqs[inside[np.argmax(mean_psd[inside])]])
        near = np.abs(freqs - fk) <= LINE_HALF_WIDTH_HZ
        around = (np.abs(freqs - fk) <= 10.0) & ~near
        floor = float(np.median(mean_psd[around])) if around.any() else 0.0
        excess += float(np.clip(mean_psd[near] - floor, 0.0, None).sum())
    return float(np.clip(excess / total, 0.0, 1.0))


def residual_share(x: np.ndarray, rate: float, band: tuple[float, float], mains: Mains) -> float:
    """Share of the in-band power of ``x`` still on the lines of ``mains`` (after removal).

    Measured on the mean spectrum: hum left only inside the bursts occupies few segments, and
    the median spectrum that finds lines would not see it.
    """
    if mains.fundamental_hz is None:  # nothing found
        return 0.0
    freqs, _, mean_psd = fine_psd(x, rate, top_hz=band[1] + 12.0)
    return _line_share(freqs, mean_psd, band, mains.fundamental_hz) if freqs.size else 0.0


#: whole periods of the fundamental per block in which a line's amplitude is measured
PERIODS_PER_BLOCK = 5


def subtract_mains(
    x: np.ndarray, rate: float, mains: Mains, exclude: np.ndarray | None = None
) -> np.ndarray:
    """``x`` less a model of its mains lines fitted where ``exclude`` is False.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        The signal (raw; a DC offset and slow drift do not matter).
    rate : float
        Sampling rate, Hz.
    mains : Mains
        The lines to remove (:func:`find_mains`).
    exclude : ndarray of bool, optional
        Samples where the lines are not measured (muscle activity, artefacts): the amplitude
        there is interpolated from the blocks around.

    Returns
    -------
    ndarray, float64
    """
    out = np.array(x, dtype=np.float64, copy=True)
    n = out.size
    if mains.fundamental_hz is None or n == 0:  # nothing found, or nothing to subtract from
        return out
    length = max(4, round(PERIODS_PER_BLOCK * rate / mains.fundamental_hz))
    n_blocks = n // length
    if n_blocks < 2:
        return out
    used = n_blocks * length
    centres = (np.arange(n_blocks) + 0.5) * length
    valid = np.ones(n_blocks, dtype=bool)
    if exclude is not None:
        valid = np.asarray(~exclude[:used].reshape(n_blocks, length).any(axis=1))
    if valid.sum() < 2:
        return out
    idx = np.arange(n, dtype=np.float64)
    n_rows = -(-n // length)
    for f in mains.harmonics_hz:
        # e^{jw(b L + r)} = e^{jwbL} e^{jwr}: one phasor per block start and one per offset in a
        # block give every sample's phasor by multiplication, and the per-block demodulation
        # becomes a matrix-vector product; cos and sin of a million growing phases cost 3x more
        w = 2 * np.pi * f / rate
        within = np.exp(1j * w * np.arange(length))
        starts = np.exp(1j * w * length * np.arange(n_rows))
        rows = out[:used].reshape(n_blocks, length)
        # the block holds whole periods of the fundamental, so (almost) whole periods of f too
        blocks = starts[:n_blocks].conj() * (rows @ within.real - 1j * (rows @ within.imag))
        amplitude = np.interp(idx, centres[valid], blocks[valid] / length)
        amplitude *= (starts[:, None] * within[None, :]).ravel()[:n]
        out -= 2 * amplitude.real
    return out


def notch_sos(mains: Mains, rate: float) -> np.ndarray:
    """Second-order sections of one notch per line of ``mains`` (shape (n_lines, 6))."""
    sections = []
    nyquist = rate / 2
    for f in mains.harmonics_hz:
        if not 0 < f < 0.98 * nyquist:
            continue
        b, a = signal.iirnotch(f, f / NOTCH_WIDTH_HZ, fs=rate)
        sections.append(np.concatenate([b, a]))
    return np.asarray(sections, dtype=np.float64).reshape(-1, 6)


__all__ = [
    "Mains",
    "find_mains",
    "fine_psd",
    "notch_sos",
    "residual_share",
    "subtract_mains",
]
