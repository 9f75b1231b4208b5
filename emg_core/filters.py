"""Band-pass filtering, rectification and envelopes of EMG arrays.

Every function works on the last axis of an array of any shape, typically
``(n_channels, n_samples)``, with no per-sample Python loop; durations are given in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import signal

#: the band-pass top edge is kept this far below Nyquist, where a Butterworth design is unstable
NYQUIST_MARGIN = 0.98


@dataclass(frozen=True, slots=True)
class BandPass:
    """A designed zero-phase band-pass filter.

    Attributes
    ----------
    sos : ndarray, shape (n_sections, 6)
        Second-order sections of the Butterworth design (one direction).
    low_hz, high_hz : float
        Cut-offs actually used (``high_hz`` may be clipped below Nyquist).
    order : int
        Order of the design; forward-backward filtering doubles the effective order.
    clipped : bool
        Whether the requested top cut-off was lowered to stay below Nyquist.
    """

    sos: np.ndarray
    low_hz: float
    high_hz: float
    order: int
    clipped: bool

    def describe(self) -> dict[str, Any]:
        """ISEK-style description of the filter, for the result's ``processing``."""
        return {
            "type": "butterworth band-pass",
            "order": self.order,
            "effective_order": 2 * self.order,
            "zero_phase": True,
            "implementation": "second-order sections, forward-backward (sosfiltfilt)",
            "low_hz": self.low_hz,
            "high_hz": self.high_hz,
            "high_clipped_below_nyquist": self.clipped,
        }


def design_bandpass(
    rate: float, low_hz: float = 20.0, high_hz: float = 450.0, order: int = 4
) -> BandPass:
    """Design the Butterworth band-pass used on raw EMG.

    Parameters
    ----------
    rate : float
        Sampling rate in Hz.
    low_hz, high_hz : float
        Requested cut-offs in Hz; ``high_hz`` is clipped to ``0.98 * rate / 2``.
    order : int
        Butterworth order of each edge.

    Returns
    -------
    BandPass
    """
    nyquist = rate / 2
    top = min(high_hz, NYQUIST_MARGIN * nyquist)
    if not 0 < low_hz < top:
        raise ValueError(f"band-pass {low_hz:g}-{high_hz:g} Hz is empty at {rate:g} Hz")
    sos = signal.butter(order, [low_hz, top], btype="bandpass", fs=rate, output="sos")
    return BandPass(sos, float(low_hz), float(top), int(order), top < high_hz)


def bandpass(x: np.ndarray, filt: BandPass, notches: np.ndarray | None = None) -> np.ndarray:
    """Zero-phase band-pass along the last axis, with optional notches in the same pass.

    Parameters
    ----------
    x : ndarray, shape (..., n_samples)
        Raw signal.
    filt : BandPass
        From :func:`design_bandpass`.
    notches : ndarray, shape (n_sections, 6), optional
        Extra second-order sections (e.g. mains notches) applied with the band-pass.

    Returns
    -------
    ndarray, same shape as ``x``, float64
    """
    sos = filt.sos if notches is None or len(notches) == 0 else np.vstack((filt.sos, notches))
    # odd extension of 3 x the filter's length, as filtfilt does, but capped for short signals
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    out: np.ndarray = signal.sosfiltfilt(sos, x, axis=-1, padlen=max(padlen, 0))
    return out


def rectify(x: np.ndarray) -> np.ndarray:
    """Full-wave rectification (absolute value)."""
    return np.asarray(np.abs(x))


def _window_samples(window_s: float, rate: float) -> int:
    # odd, so the window is centred on its sample: a centred envelope adds no delay
    half = max(0, round(window_s * rate / 2))
    return 2 * half + 1


def prefix_sum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cumulative sum along ``axis`` with a leading zero, in float64: the sum of
    ``x[a:b]`` along that axis is ``out[b] - out[a]``, for any number of spans at once.

    Booleans sum to counts (how many masked samples lie in a span).
    """
    x = np.asarray(x)
    axis = axis % max(x.ndim, 1)
    shape = list(x.shape)
    shape[axis] += 1
    out = np.zeros(shape, dtype=np.float64)
    tail = [slice(None)] * x.ndim
    tail[axis] = slice(1, None)
    np.cumsum(x, axis=axis, out=out[tuple(tail)])
    return out


def moving_mean(x: np.ndarray, rate: float, window_s: float) -> np.ndarray:
    """Centred moving average along the last axis, computed with cumulative sums.

    Near the edges the window shrinks to the samples that exist (no zero padding bias).

    Parameters
    ----------
    x : ndarray, shape (..., n_samples)
    rate : float
        Sampling rate in Hz.
    window_s : float
        Window length in seconds (rounded to an odd number of samples).

    Returns
    -------
    ndarray, same shape as ``x``, float64
    """
    n = x.shape[-1]
    w = _window_samples(window_s, rate)
    half = w // 2
    csum = prefix_sum(x)
    if n > 2 * half:
        # interior by slicing; only the 2 x half edge samples need index arrays
        out = np.empty(x.shape, dtype=np.float64)
        np.subtract(csum[..., w:], csum[..., : n + 1 - w], out=out[..., half : n - half])
        out[..., half : n - half] /= w
        for idx in (np.arange(0, half), np.arange(n - half, n)):
            hi, lo = np.minimum(idx + half + 1, n), np.maximum(idx - half, 0)
            out[..., idx] = (csum[..., hi] - csum[..., lo]) / (hi - lo)
        return out
    idx = np.arange(n)
    hi, lo = np.minimum(idx + half + 1, n), np.maximum(idx - half, 0)
    return np.asarray((csum[..., hi] - csum[..., lo]) / (hi - lo))


def block_mean(x: np.ndarray, step: int) -> np.ndarray:
    """Means of consecutive blocks of ``step`` samples along the last axis (the last block may
    be shorter).

    Summed with ``step`` strided adds: numpy reduces a short last axis (``reshape(..., step)
    .mean(-1)``) several times slower than it adds whole arrays.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    if step <= 1 or n == 0:
        return x.copy()
    full = n // step
    n_blocks = -(-n // step)
    out = np.zeros((*x.shape[:-1], n_blocks), dtype=np.float64)
    for k in range(step):
        part = x[..., k::step]
        out[..., : part.shape[-1]] += part
    out[..., :full] /= step
    if n_blocks > full:
        out[..., full] /= n - full * step
    return out


def rms_envelope(x: np.ndarray, rate: float, window_s: float = 0.05, step: int = 1) -> np.ndarray:
    """Centred moving RMS along the last axis, at every ``step``-th sample.

    Parameters
    ----------
    x : ndarray, shape (..., n_samples)
        Band-passed EMG.
    rate : float
        Sampling rate in Hz.
    window_s : float
        RMS window in seconds (default 50 ms).
    step : int
        One value per block of ``step`` samples (the window then spans whole blocks): a 50 ms
        window holds nothing faster than ~20 Hz, so a few hundred values a second lose nothing.

    Returns
    -------
    ndarray, shape (..., ceil(n_samples / step)), float64, in the unit of ``x``
    """
    if step <= 1:
        power = moving_mean(np.square(x), rate, window_s)
    else:
        # mean power per block of ``step`` samples, then a centred moving mean over whole
        # blocks: the window is the requested one to within a block, and the n-long work is
        # one square and one block sum
        power_blocks = block_mean(np.square(x), step)
        power = moving_mean(power_blocks, rate / step, window_s)
    # cumulative-sum differences can come out a hair below zero at rest
    np.maximum(power, 0.0, out=power)
    return np.asarray(np.sqrt(power, out=power))


__all__ = [
    "BandPass",
    "bandpass",
    "block_mean",
    "design_bandpass",
    "moving_mean",
    "rectify",
    "rms_envelope",
]
