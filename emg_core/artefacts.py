"""Sensor artefacts in raw EMG: stuck or railed samples (dropouts) and the steps after them.

A wireless EMG sensor that loses its link, or an amplifier driven to its limit, writes the same
value sample after sample: GHOSTLY files show runs of about 270 ms stuck exactly at the -5.5 mV
rail, and the baseline after such a run can sit at another level. Real EMG, even at rest, never
repeats one value for long: on the real recordings we checked, quantised to 0.17 µV, no run of
equal samples outside a dropout was longer than 13 samples (13 ms, at a clipping rail).

The artefact is masked, not analysed: its samples are replaced by a straight line between the
neighbouring good samples before filtering (so the band-pass sees neither the rail's step nor the
baseline step after it as a burst of power), and a guard on each side, as long as the filters'
reach, is masked too. Masked samples never make a contraction, an MVC window, a spectrum or a
fatigue window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: equal consecutive samples lasting at least this long are a stuck sensor, not EMG
MIN_STUCK_S = 0.025
#: and at least this many samples, whatever the rate (a 25 ms run at 100 Hz is 3 samples)
MIN_STUCK_SAMPLES = 8


@dataclass(frozen=True, slots=True)
class Artefacts:
    """Stuck stretches of one raw channel.

    Attributes
    ----------
    starts, ends : ndarray of int64
        ``[start, end)`` sample indices of each stuck run, sorted and disjoint.
    """

    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def n_samples(self) -> int:
        """Stuck samples in total."""
        return int(np.sum(self.ends - self.starts))


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` indices of the True runs of a boolean array."""
    edges = np.diff(mask.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def find_stuck(raw: np.ndarray, rate: float, min_s: float = MIN_STUCK_S) -> Artefacts:
    """Runs of identical consecutive samples lasting at least ``min_s``.

    Parameters
    ----------
    raw : ndarray, shape (n_samples,)
        Raw samples, as read from the file.
    rate : float
        Sampling rate, Hz.
    min_s : float
        Shortest run called stuck, seconds.

    Returns
    -------
    Artefacts
    """
    n = raw.size
    empty = np.empty(0, dtype=np.int64)
    if n < 2:
        return Artefacts(empty, empty)
    same = raw[1:] == raw[:-1]
    s, e = runs(same)
    # a run of k equal differences is k + 1 equal samples
    s, e = s, e + 1
    keep = (e - s) >= max(MIN_STUCK_SAMPLES, round(min_s * rate))
    return Artefacts(s[keep].astype(np.int64), e[keep].astype(np.int64))


def bridge(raw: np.ndarray, art: Artefacts) -> np.ndarray:
    """A copy of ``raw`` with each stuck run replaced by a line between its good neighbours.

    A step in the baseline after the run becomes a ramp as long as the run, which a 20 Hz
    high-pass removes, instead of an edge it would turn into a burst of broadband power.
    """
    out = np.array(raw, dtype=np.float64, copy=True)
    n = out.size
    for s, e in zip(art.starts.tolist(), art.ends.tolist(), strict=True):
        left = out[s - 1] if s > 0 else (out[e] if e < n else 0.0)
        right = out[e] if e < n else left
        out[s:e] = np.linspace(left, right, e - s + 2)[1:-1]
    return out


def mask_of(art: Artefacts, n: int, guard: int) -> np.ndarray:
    """Boolean mask of the stuck runs widened by ``guard`` samples on each side."""
    mask = np.zeros(n, dtype=bool)
    for s, e in zip(art.starts.tolist(), art.ends.tolist(), strict=True):
        mask[max(0, s - guard) : min(n, e + guard)] = True
    return mask


def mask_of_runs(mask: np.ndarray, guard: int) -> np.ndarray:
    """``mask`` with each True run widened by ``guard`` samples on each side."""
    starts, ends = runs(mask)
    return mask_of(Artefacts(starts, ends), mask.size, guard)


def clipped_fraction(raw: np.ndarray) -> float:
    """Share of samples at the channel's extreme values beyond the one or two any signal has.

    Repeated extremes mean the amplifier saturated: the waveform there is cut, so amplitudes and
    spectra are wrong. 0 for an empty channel.
    """
    if raw.size == 0:
        return 0.0
    lo, hi = raw.min(), raw.max()
    if lo == hi:
        return 1.0  # nothing but one value: all of it is at the limit
    stuck = (np.count_nonzero(raw == lo) + np.count_nonzero(raw == hi)) / raw.size
    return float(max(stuck - 2 / raw.size, 0.0))


__all__ = [
    "Artefacts",
    "bridge",
    "clipped_fraction",
    "find_stuck",
    "mask_of",
    "mask_of_runs",
    "runs",
]
