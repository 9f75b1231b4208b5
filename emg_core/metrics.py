"""Clinical metrics: MVC, per-contraction compliance, session rates, quality and symmetry.

The GHOSTLY protocol asks for a number of contractions per muscle (default 12), each reaching
a percentage of the maximum voluntary contraction (default 75 % MVC) and lasting long enough
(default 2 s). Amplitudes are in the channel's own unit (the file's: V, mV, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from .filters import prefix_sum


def best_window(
    envelope: np.ndarray, rate: float, window_s: float = 0.5, valid: np.ndarray | None = None
) -> tuple[float, int | None]:
    """The highest mean of the envelope over a window of ``window_s`` holding no invalid sample.

    Parameters
    ----------
    envelope : ndarray, shape (n_samples,)
    rate : float
        Sampling rate in Hz.
    window_s : float
        Window length in seconds (default 500 ms).
    valid : ndarray of bool, optional
        False on samples no window may touch (masked artefacts).

    Returns
    -------
    value : float
        In the envelope's unit; 0.0 when no window qualifies.
    start : int or None
        First sample of the window; ``None`` when no window qualifies.
    """
    n = envelope.size
    if n == 0:
        return 0.0, None
    w = max(1, min(round(window_s * rate), n))
    csum = prefix_sum(envelope)
    means = (csum[w:] - csum[:-w]) / w
    if valid is not None and not valid.all():
        bad = prefix_sum(~valid)
        means = np.where(bad[w:] - bad[:-w] == 0, means, -np.inf)
    k = int(np.argmax(means))
    if not np.isfinite(means[k]):
        return 0.0, None
    return float(means[k]), k


def estimate_mvc(
    envelope: np.ndarray, rate: float, window_s: float = 0.5, valid: np.ndarray | None = None
) -> float:
    """MVC estimate: the highest mean envelope over any clean window of ``window_s``."""
    return best_window(envelope, rate, window_s, valid)[0]


class Rates(TypedDict):
    completion_rate: float
    intensity_rate: float
    duration_rate: float
    compliance_rate: float


def rates(total: int, good: int, mvc_ok: int, duration_ok: int, expected: int) -> Rates:
    """Completion, intensity, duration and compliance rates, each in [0, 1].

    ``completion = min(total, expected) / expected``; ``intensity = mvc_ok / total``;
    ``duration = duration_ok / total``; ``compliance = min(good, expected) / expected``
    (intensity and duration are 0 without contractions; completion and compliance are 0 when
    nothing is expected).
    """
    return Rates(
        completion_rate=min(total, expected) / expected if expected > 0 else 0.0,
        intensity_rate=mvc_ok / total if total else 0.0,
        duration_rate=duration_ok / total if total else 0.0,
        compliance_rate=min(good, expected) / expected if expected > 0 else 0.0,
    )


def signal_quality(
    contrast: float, mains_fraction: float, clipped: float, masked_share: float
) -> float:
    """A 0..1 score of how analysable a channel is.

    The product of four factors: contrast (strongest sustained activity over the rest level,
    6 dB -> 0, >= 30 dB -> 1), mains interference left in the signal (1 - its share of the
    in-band power), clipping (1 % or more of the samples saturated -> 0) and the share of the
    recording left after masking artefacts.

    Parameters
    ----------
    contrast : float
        Activity over rest, a ratio (``Detection.contrast``).
    mains_fraction : float
        Share of the in-band power on mains lines still in the analysed signal, 0..1.
    clipped : float
        Share of saturated samples, 0..1.
    masked_share : float
        Share of the samples masked as artefact, 0..1.

    Returns
    -------
    float in [0, 1]
    """
    if not contrast > 0:
        return 0.0
    contrast_db = 20 * np.log10(contrast)
    factors = (
        np.clip((contrast_db - 6.0) / 24.0, 0.0, 1.0),
        np.clip(1.0 - mains_fraction, 0.0, 1.0),
        np.clip(1.0 - clipped / 0.01, 0.0, 1.0),
        np.clip(1.0 - masked_share, 0.0, 1.0),
    )
    return float(np.clip(np.prod(factors), 0.0, 1.0))


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
    "best_window",
    "estimate_mvc",
    "left_right_pairs",
    "rates",
    "signal_quality",
    "symmetry",
]
