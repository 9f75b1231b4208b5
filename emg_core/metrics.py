"""Clinical metrics: MVC, per-contraction compliance, session rates, quality and symmetry.

The GHOSTLY protocol asks for a number of contractions per muscle (default 12), each reaching
a percentage of the maximum voluntary contraction (default 75 % MVC) and lasting long enough
(default 2 s). Amplitudes are in the channel's own unit (the file's: V, mV, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def estimate_mvc(envelope: np.ndarray, rate: float, window_s: float = 0.5) -> float:
    """MVC estimate: the highest mean envelope over any window of ``window_s``.

    Parameters
    ----------
    envelope : ndarray, shape (n_samples,)
    rate : float
        Sampling rate in Hz.
    window_s : float
        Window length in seconds (default 500 ms).

    Returns
    -------
    float
        In the envelope's unit; 0.0 for an empty envelope.
    """
    if envelope.size == 0:
        return 0.0
    w = round(window_s * rate)
    if envelope.size <= w:
        return float(envelope.mean())
    csum = np.concatenate(([0.0], np.cumsum(envelope)))
    return float(np.max(csum[w:] - csum[:-w]) / w)


def rates(total: int, good: int, mvc_ok: int, duration_ok: int, expected: int) -> dict[str, float]:
    """Completion, intensity, duration and compliance rates, each in [0, 1].

    ``completion = min(total, expected) / expected``; ``intensity = mvc_ok / total``;
    ``duration = duration_ok / total``; ``compliance = min(good, expected) / expected``
    (intensity and duration are 0 without contractions; completion and compliance are 0 when
    nothing is expected).
    """
    return {
        "completion_rate": min(total, expected) / expected if expected > 0 else 0.0,
        "intensity_rate": mvc_ok / total if total else 0.0,
        "duration_rate": duration_ok / total if total else 0.0,
        "compliance_rate": min(good, expected) / expected if expected > 0 else 0.0,
    }


def clipped_fraction(raw: np.ndarray) -> float:
    """Share of samples stuck at the channel's extreme values, beyond the one or two any
    signal has (runs of them mean the amplifier saturated). 0 for an empty channel."""
    if raw.size == 0:
        return 0.0
    lo, hi = raw.min(), raw.max()
    stuck = (np.count_nonzero(raw == lo) + np.count_nonzero(raw == hi)) / raw.size
    return float(max(stuck - 2 / raw.size, 0.0))


def signal_quality(
    envelope: np.ndarray, baseline_mean: float, mains_fraction: float, clipped: float
) -> float:
    """A 0..1 score of how analysable a channel is.

    The product of three factors: contrast (the 99th-percentile envelope over the rest level,
    0 dB -> 0, >= 30 dB -> 1), clipping (1 % or more of the samples clipped -> 0) and mains
    interference (1 - share of in-band power on the 50/60 Hz lines and their harmonics).

    Parameters
    ----------
    envelope : ndarray
        The channel's RMS envelope.
    baseline_mean : float
        Rest level of the envelope.
    mains_fraction : float
        Share of the in-band power at mains frequencies, 0..1 (:func:`mains_fraction`).
    clipped : float
        Share of clipped samples, 0..1 (:func:`clipped_fraction`).

    Returns
    -------
    float in [0, 1]
    """
    if envelope.size == 0:
        return 0.0
    top = float(np.percentile(envelope, 99))
    if baseline_mean > 0 and top > 0:
        contrast_db = 20 * np.log10(top / baseline_mean)
        contrast = float(np.clip(contrast_db / 30.0, 0.0, 1.0))
    else:
        contrast = 1.0 if top > 0 else 0.0
    clipping = float(np.clip(1.0 - clipped / 0.01, 0.0, 1.0))
    mains = float(np.clip(1.0 - mains_fraction, 0.0, 1.0))
    return float(np.clip(contrast * clipping * mains, 0.0, 1.0))


def mains_fraction(freqs: np.ndarray, psd: np.ndarray, width_hz: float = 2.0) -> float:
    """Share of the power of ``psd`` (shape (n_freqs,)) within ``width_hz`` of 50/60 Hz lines."""
    total = float(psd.sum())
    if total <= 0 or freqs.size == 0:
        return 0.0
    near = np.zeros(freqs.size, dtype=bool)
    for base in (50.0, 60.0):
        harmonics = base * np.arange(1, int(freqs[-1] // base) + 1)
        if harmonics.size:
            near |= np.min(np.abs(freqs[:, None] - harmonics[None, :]), axis=1) <= width_hz
    # only the excess over the neighbouring level is interference, not the EMG under the line
    if not near.any() or near.all():
        return 0.0
    floor = float(np.median(psd[~near]))
    excess = np.clip(psd[near] - floor, 0.0, None).sum()
    return float(excess / total)


_SIDE = re.compile(r"(?i)(?:^|[\s._-])(left|right|l|r)(?=$|[\s._-])")


def _side_and_key(label: str) -> tuple[str, str] | None:
    matches = list(_SIDE.finditer(label))
    if len(matches) != 1:
        return None
    m = matches[0]
    side = m.group(1).lower()[0]
    key = (label[: m.start(1)] + label[m.end(1) :]).strip(" ._-").lower()
    return side, key


def left_right_pairs(labels: Sequence[str], ghostly: bool = False) -> list[tuple[int, int]]:
    """Index pairs ``(left, right)`` of channels that are the same muscle on both sides.

    Labels naming a side (``Left Rectus femoris`` / ``Right Rectus femoris``, ``L_TA`` / ``R_TA``)
    pair by the rest of their name. In a GHOSTLY file with exactly two raw channels, CH1 and CH2
    are the two legs.
    """
    if ghostly and len(labels) == 2:
        return [(0, 1)]
    sides: dict[str, dict[str, int]] = {}
    for i, label in enumerate(labels):
        found = _side_and_key(label)
        if found:
            sides.setdefault(found[1], {})[found[0]] = i
    return [(v["l"], v["r"]) for v in sides.values() if "l" in v and "r" in v]


def symmetry(left: float, right: float) -> float:
    """``1 - |left - right| / (left + right)``: 1 when equal, 0 when one side is zero."""
    total = left + right
    return 1.0 if total == 0 else float(1.0 - abs(left - right) / total)


__all__ = [
    "clipped_fraction",
    "estimate_mvc",
    "left_right_pairs",
    "mains_fraction",
    "rates",
    "signal_quality",
    "symmetry",
]
