"""The judge of detection on real recordings: one set of definitions for the script and the tests.

``bench/validate_real.py`` prints these checks per channel and ``tests/test_real_samples.py``
asserts them; both import this module, so a definition changes in one place only. Everything
here works on plain arrays and on ``emg_core`` result objects, and nothing uses the analysis's
own filters, envelopes or masks: the reference envelope is built with scipy directly, after
undoing the artefacts the detector is supposed to handle (stuck samples, mains hum), so a
detector that is fooled by them cannot fool its judge the same way. The only I/O is
:func:`load_channels`, which reads the samples with the project's C3D reader (the reader is
not what is being judged).

Definitions (docs/validation.md explains why each one):

- game count: runs of ``activated > 0``, merged across gaps of at most ``GAME_MERGE_GAP_S``,
  then runs shorter than ``GAME_MIN_DURATION_S`` dropped (the rules ``emg_core.detect.agreement``
  applies to the hint); reported with its range over the merge gaps and minimum durations the
  game's own count could plausibly mean.
- stuck run: at least ``STUCK_MIN_RUN`` identical consecutive raw samples (a frozen amplifier or
  a dropped wireless link repeating its last value).
- reference envelope: stuck runs interpolated, the mains line and its harmonics notched, a
  zero-phase 4th-order Butterworth band-pass, a centred moving RMS.
- rest level: the median of the reference envelope over samples outside stuck runs; "at rest"
  is below ``REST_FACTOR`` times it; for rest stretches, rises of at most ``REST_MAX_FILTER_S``
  inside rest are bridged.
- hum fraction: the share of in-band Welch power lying within ``HUM_HALF_WIDTH_HZ`` of the mains
  line and its harmonics, above the median out-of-line floor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, signal

# the game's activated channel: the rules detect.agreement applies to it
GAME_MERGE_GAP_S = 0.2
GAME_MIN_DURATION_S = 0.1
# what the game's count could also mean: it publishes no merge or minimum-duration rule
GAME_MERGE_GAPS_S = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
GAME_MIN_DURATIONS_S = (0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2)

STUCK_MIN_RUN = 20  # identical consecutive samples; ~20 ms at 990 Hz, never seen in live EMG noise

BAND_HZ = (20.0, 450.0)
BAND_ORDER = 4
RMS_WINDOW_S = 0.05

MAINS_SEARCH_HZ = (47.0, 52.0)
NOTCH_Q = 30.0
WELCH_NPERSEG = 4096
HUM_HALF_WIDTH_HZ = 1.0
HUM_LIMIT = 0.20  # a channel at or above this hum fraction is a "hum channel", below it "clean"

REST_FACTOR = 3.0
REST_SPAN_S = 1.0  # a rest stretch this long inside one contraction means two bursts were joined
REST_MAX_FILTER_S = 0.1
EDGE_S = 0.15  # a stuck run this far inside a contraction, with activity around it, is bridged

TOLERANCE_ABS = 2
TOLERANCE_REL = 0.2


# --------------------------------------------------------------------------------------------
# runs


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the True runs of a boolean array."""
    edges = np.diff(np.asarray(mask, dtype=np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def merge_runs(starts: np.ndarray, ends: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Join sorted, disjoint runs whose gap (samples between them) is at most ``max_gap``."""
    if starts.size == 0:
        return starts, ends
    new = np.ones(starts.size, dtype=bool)
    new[1:] = starts[1:] - ends[:-1] > max_gap
    idx = np.flatnonzero(new)
    return starts[idx], np.maximum.reduceat(ends, idx)


def overlaps(start: int, end: int, starts: np.ndarray, ends: np.ndarray) -> bool:
    """Whether ``[start, end)`` overlaps any of the runs ``[starts[i], ends[i])``."""
    return bool(np.any((starts < end) & (ends > start)))


# --------------------------------------------------------------------------------------------
# the game's count


def game_events(
    activated: np.ndarray,
    rate: float,
    *,
    merge_gap_s: float = GAME_MERGE_GAP_S,
    min_duration_s: float = GAME_MIN_DURATION_S,
) -> tuple[np.ndarray, np.ndarray]:
    """The game's contractions as ``[start, end)`` sample indices."""
    starts, ends = runs(np.nan_to_num(np.asarray(activated, dtype=np.float64)) > 0)
    starts, ends = merge_runs(starts, ends, round(merge_gap_s * rate))
    keep = ends - starts >= max(1, round(min_duration_s * rate))
    return starts[keep], ends[keep]


def game_count(
    activated: np.ndarray,
    rate: float,
    *,
    merge_gap_s: float = GAME_MERGE_GAP_S,
    min_duration_s: float = GAME_MIN_DURATION_S,
) -> int:
    """How many contractions the game's activated channel shows."""
    starts, _ = game_events(activated, rate, merge_gap_s=merge_gap_s, min_duration_s=min_duration_s)
    return int(starts.size)


def game_count_range(
    activated: np.ndarray,
    rate: float,
    *,
    merge_gaps_s: Sequence[float] = GAME_MERGE_GAPS_S,
    min_durations_s: Sequence[float] = GAME_MIN_DURATIONS_S,
) -> tuple[int, int]:
    """Smallest and largest game count over a grid of merge gaps and minimum durations.

    A grid, not the two corners: merging can turn two dropped short runs into one kept run, so
    the count is not monotonic in either parameter.
    """
    counts = [
        game_count(activated, rate, merge_gap_s=g, min_duration_s=d)
        for g in merge_gaps_s
        for d in min_durations_s
    ]
    return min(counts), max(counts)


def within_tolerance(ours: int | None, game: int) -> bool:
    """``|ours - game| <= max(2, 20 % of game)``; no count of ours is never within."""
    if ours is None:
        return False
    return abs(ours - game) <= max(TOLERANCE_ABS, TOLERANCE_REL * game)


# --------------------------------------------------------------------------------------------
# stuck samples


def stuck_runs(raw: np.ndarray, min_run: int = STUCK_MIN_RUN) -> tuple[np.ndarray, np.ndarray]:
    """Runs of at least ``min_run`` identical consecutive samples, as ``[start, end)`` indices."""
    x = np.asarray(raw)
    if x.size < min_run:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # run of k identical samples = run of k - 1 zero differences
    starts, ends = runs(x[1:] == x[:-1])
    keep = ends - starts >= min_run - 1
    return starts[keep], ends[keep] + 1


def runs_mask(n: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A boolean array of length ``n``, True inside the runs."""
    delta = np.zeros(n + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return np.cumsum(delta[:-1]) > 0


def repair_stuck(raw: np.ndarray, stuck: np.ndarray) -> np.ndarray:
    """The samples with the ``stuck`` ones replaced by linear interpolation of their neighbours.

    A wholly stuck channel becomes zeros (nothing to interpolate from).
    """
    x = np.asarray(raw, dtype=np.float64).copy()
    if not stuck.any():
        return x
    good = np.flatnonzero(~stuck)
    if good.size == 0:
        return np.zeros_like(x)
    bad = np.flatnonzero(stuck)
    x[bad] = np.interp(bad, good, x[good])
    return x


# --------------------------------------------------------------------------------------------
# mains hum


def _welch(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    nperseg = min(WELCH_NPERSEG, x.size)
    return signal.welch(x, fs=rate, nperseg=nperseg)


def _band_top(rate: float) -> float:
    # a recording sampled below 900 Hz cannot hold 450 Hz; stay clear of Nyquist
    return min(BAND_HZ[1], 0.45 * rate)


def mains_line(freqs: np.ndarray, psd: np.ndarray) -> float | None:
    """The largest PSD peak within ``MAINS_SEARCH_HZ``, refined between bins; None without bins.

    Always a frequency when the search range has bins: whether it is a real line is what the hum
    fraction (its power above the floor) says.
    """
    lo, hi = MAINS_SEARCH_HZ
    idx = np.flatnonzero((freqs >= lo) & (freqs <= hi))
    if idx.size == 0:
        return None
    k = int(idx[np.argmax(psd[idx])])
    f = float(freqs[k])
    if 0 < k < psd.size - 1:
        # parabola through the peak and its neighbours: harmonics multiply the bin's error
        a, b, c = psd[k - 1], psd[k], psd[k + 1]
        den = a - 2 * b + c
        if den < 0:
            f += 0.5 * (a - c) / den * float(freqs[1] - freqs[0])
    return f


def harmonics(fundamental: float, top_hz: float) -> list[float]:
    """The fundamental and its multiples up to ``top_hz``."""
    return [fundamental * k for k in range(1, int(top_hz // fundamental) + 1)]


@dataclass(frozen=True, slots=True)
class Hum:
    """The judge's view of a channel's mains hum."""

    hz: float | None
    fraction: float


def hum(x: np.ndarray, rate: float) -> Hum:
    """Mains line and the share of in-band power on it and its harmonics (above the floor)."""
    if x.size < 16 or not np.any(x != x[0]):
        return Hum(None, 0.0)
    freqs, psd = _welch(x, rate)
    f0 = mains_line(freqs, psd)
    band = (freqs >= BAND_HZ[0]) & (freqs <= _band_top(rate))
    total = float(psd[band].sum())
    if f0 is None or total <= 0:
        return Hum(f0, 0.0)
    on_line = np.zeros(freqs.size, dtype=bool)
    for h in harmonics(f0, _band_top(rate)):
        on_line |= np.abs(freqs - h) <= HUM_HALF_WIDTH_HZ
    on_line &= band
    off = band & ~on_line
    floor = float(np.median(psd[off])) if off.any() else 0.0
    excess = float(np.clip(psd[on_line] - floor, 0, None).sum())
    return Hum(f0, excess / total)


def notch_mains(x: np.ndarray, rate: float, fundamental: float | None) -> np.ndarray:
    """Zero-phase IIR notches (Q = ``NOTCH_Q``) at the fundamental and its in-band harmonics."""
    if fundamental is None:
        return x
    y = x
    for h in harmonics(fundamental, min(_band_top(rate), 0.49 * rate)):
        b, a = signal.iirnotch(h, NOTCH_Q, fs=rate)
        y = signal.filtfilt(b, a, y)
    return y


# --------------------------------------------------------------------------------------------
# reference envelope and rest


def moving_rms(x: np.ndarray, rate: float, window_s: float = RMS_WINDOW_S) -> np.ndarray:
    """Centred moving RMS over an odd number of samples (edges: the window's nearest values)."""
    w = 2 * max(0, round(window_s * rate / 2)) + 1
    power = ndimage.uniform_filter1d(np.square(x), size=w, mode="nearest")
    return np.sqrt(np.clip(power, 0, None))


@dataclass(frozen=True, slots=True)
class Reference:
    """One channel as the judge sees it."""

    rate: float
    envelope: np.ndarray
    stuck_starts: np.ndarray
    stuck_ends: np.ndarray
    stuck: np.ndarray  # bool per sample
    hum: Hum
    rest_level: float


def reference(raw: np.ndarray, rate: float) -> Reference:
    """The judge's reference envelope of one raw channel, with its stuck runs, hum and rest."""
    x = np.nan_to_num(np.asarray(raw, dtype=np.float64))
    s_starts, s_ends = stuck_runs(x)
    stuck = runs_mask(x.size, s_starts, s_ends)
    repaired = repair_stuck(x, stuck)
    h = hum(repaired, rate)
    cleaned = notch_mains(repaired, rate, h.hz)
    if cleaned.size > 3 * (2 * BAND_ORDER + 1):
        sos = signal.butter(
            BAND_ORDER, [BAND_HZ[0], _band_top(rate)], btype="bandpass", fs=rate, output="sos"
        )
        cleaned = signal.sosfiltfilt(sos, cleaned)
    env = moving_rms(cleaned, rate)
    return Reference(rate, env, s_starts, s_ends, stuck, h, rest_level(env, stuck))


def rest_level(envelope: np.ndarray, masked: np.ndarray | None = None) -> float:
    """The median of the envelope over the samples not masked (0 when every one is)."""
    values = envelope if masked is None else envelope[~masked]
    return float(np.median(values)) if values.size else 0.0


def rest_mask(envelope: np.ndarray, rest: float, rate: float) -> np.ndarray:
    """Samples "at rest" for the stretch test: below ``REST_FACTOR`` x rest, blips bridged.

    A rise above the limit lasting at most ``REST_MAX_FILTER_S`` between two rest samples
    (a noisy sample, an ECG beat) is counted as rest, so it does not break a rest stretch: a
    100 ms moving max of the at-rest indicator, applied only inside rest so that no stretch
    grows at its ends (a rest gap of 0.95 s between two bursts stays 0.95 s).
    """
    at_rest = np.asarray(envelope) < REST_FACTOR * rest
    starts, ends = runs(~at_rest)
    inner = (starts > 0) & (ends < at_rest.size)
    short = inner & (ends - starts <= max(1, round(REST_MAX_FILTER_S * rate)))
    for s, e in zip(starts[short], ends[short], strict=True):
        at_rest[s:e] = True
    return at_rest


def lies_on_rest(envelope: np.ndarray, rest: float, start: int, end: int) -> bool:
    """Whether the envelope inside ``[start, end)`` never exceeds ``REST_FACTOR`` x rest."""
    inside = envelope[max(0, start) : max(max(0, start), end)]
    return inside.size > 0 and bool(inside.max() <= REST_FACTOR * rest)


def longest_rest(at_rest: np.ndarray, start: int, end: int) -> int:
    """Length in samples of the longest all-rest stretch inside ``[start, end)``."""
    s, e = runs(at_rest[max(0, start) : max(0, end)])
    return int((e - s).max()) if s.size else 0


def spans_rest(at_rest: np.ndarray, rate: float, start: int, end: int) -> bool:
    """Whether ``[start, end)`` holds a stretch of at least ``REST_SPAN_S`` entirely at rest."""
    return longest_rest(at_rest, start, end) >= round(REST_SPAN_S * rate)


# --------------------------------------------------------------------------------------------
# one channel's verdict


def _samples(ms: float, rate: float) -> int:
    return round(ms * rate / 1000)


def mvc_in_microvolts(value: float | None, unit: str) -> float | None:
    """An amplitude in µV when the unit is a voltage (no unit means volts); else None."""
    if value is None:
        return None
    scales = {"": 1e6, "v": 1e6, "mv": 1e3, "uv": 1.0, "µv": 1.0, "μv": 1.0}
    scale = scales.get(unit.strip().lower())
    return None if scale is None else value * scale


def hum_handled(judge_fraction: float, channel: Any) -> bool:
    """A hum channel is handled when the lines were removed, or it is unusable with a warning."""
    if judge_fraction < HUM_LIMIT:
        return True
    return bool(channel.mains_removed) or (not channel.usable and bool(channel.warnings))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every check of one analysed channel against the judge's reference."""

    name: str
    ours: int | None
    good: int | None
    game: int | None  # None: no activated channel
    game_range: tuple[int, int] | None
    judge_hum_fraction: float
    judge_mains_hz: float | None
    rest_level: float
    stuck_s: float
    on_rest: tuple[int, ...]  # contraction indices lying on rest
    spanning_rest: tuple[int, ...]  # contraction indices holding >= 1 s of rest
    on_dropout: tuple[int, ...]  # contraction indices a stuck run starts, ends or fills
    bridged: tuple[int, ...]  # contraction indices holding a stuck run inside a burst
    mvc_on_dropout: bool
    mvc_window_missing: bool  # estimated MVC without its window: cannot be checked
    hum_handled: bool

    @property
    def clean(self) -> bool:
        return self.judge_hum_fraction < HUM_LIMIT

    @property
    def within_tolerance(self) -> bool | None:
        """None when there is no game count to compare with."""
        return None if self.game is None else within_tolerance(self.ours, self.game)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out.update(clean=self.clean, within_tolerance=self.within_tolerance)
        return out


def held_inside(
    envelope: np.ndarray,
    rest: float,
    rate: float,
    start: int,
    end: int,
    stuck_starts: np.ndarray,
    stuck_ends: np.ndarray,
) -> bool:
    """Whether every stuck run overlapping ``[start, end)`` lies inside a burst that goes on
    around it: at least ``EDGE_S`` of the contraction on each side, and the reference envelope
    active (above ``REST_FACTOR`` x rest) within ``EDGE_S`` before and after it. Such a
    contraction is one burst the sensor briefly lost, not one made of the dropout."""
    edge = round(EDGE_S * rate)
    active = REST_FACTOR * rest
    hit = (stuck_starts < end) & (stuck_ends > start)
    for a, b in zip(stuck_starts[hit].tolist(), stuck_ends[hit].tolist(), strict=True):
        if a - start < edge or end - b < edge:
            return False
        if envelope[a - edge : a].max() <= active or envelope[b : b + edge].max() <= active:
            return False
    return bool(hit.any())


def judge(channel: Any, raw: np.ndarray, activated: np.ndarray | None, rate: float) -> Verdict:
    """Judge one ``emg_core`` ChannelResult against the raw samples (and the game's channel)."""
    ref = reference(raw, rate)
    at_rest = rest_mask(ref.envelope, ref.rest_level, rate)
    on_rest, spanning, on_dropout, bridged = [], [], [], []
    for c in channel.contractions:
        s, e = _samples(c.start_ms, rate), _samples(c.end_ms, rate)
        if lies_on_rest(ref.envelope, ref.rest_level, s, e):
            on_rest.append(c.index)
        if spans_rest(at_rest, rate, s, e):
            spanning.append(c.index)
        if overlaps(s, e, ref.stuck_starts, ref.stuck_ends):
            if held_inside(
                ref.envelope, ref.rest_level, rate, s, e, ref.stuck_starts, ref.stuck_ends
            ):
                bridged.append(c.index)
            else:
                on_dropout.append(c.index)
    mvc_on_dropout = False
    window_missing = False
    if channel.mvc_start_ms is not None and channel.mvc_end_ms is not None:
        s, e = _samples(channel.mvc_start_ms, rate), _samples(channel.mvc_end_ms, rate)
        mvc_on_dropout = overlaps(s, e, ref.stuck_starts, ref.stuck_ends)
    elif channel.usable and channel.mvc_method == "session_estimate":
        window_missing = True
    game = game_range = None
    if activated is not None:
        game = game_count(activated, rate)
        game_range = game_count_range(activated, rate)
    return Verdict(
        name=channel.name,
        ours=channel.contractions_total,
        good=channel.contractions_good,
        game=game,
        game_range=game_range,
        judge_hum_fraction=ref.hum.fraction,
        judge_mains_hz=ref.hum.hz,
        rest_level=ref.rest_level,
        stuck_s=float(ref.stuck.sum()) / rate,
        on_rest=tuple(on_rest),
        spanning_rest=tuple(spanning),
        on_dropout=tuple(on_dropout),
        bridged=tuple(bridged),
        mvc_on_dropout=mvc_on_dropout,
        mvc_window_missing=window_missing,
        hum_handled=hum_handled(ref.hum.fraction, channel),
    )


# --------------------------------------------------------------------------------------------
# reading a file (the one piece of I/O)

_RAW = re.compile(r"^\s*CH\s*(\d+)\s*[ _-]?\s*raw\s*$", re.IGNORECASE)
_ACTIVATED = re.compile(r"^\s*CH\s*(\d+)\s*[ _-]?\s*activated\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ChannelData:
    rate: float
    raw: np.ndarray
    activated: np.ndarray | None  # the game's "CHn activated" for a "CHn Raw", else None


def load_channels(path: str | Path, names: Sequence[str]) -> dict[str, ChannelData]:
    """The raw samples of the named channels and, for GHOSTLY ``CHn Raw``, ``CHn activated``.

    The pairing is done here by label, not taken from the analysis's channel discovery.
    """
    from emg_core.c3d import read_c3d

    rec = read_c3d(str(path))
    index = {label: i for i, label in enumerate(rec.labels)}
    activated = {}
    for i, label in enumerate(rec.labels):
        if m := _ACTIVATED.match(label):
            activated[int(m.group(1))] = i
    out = {}
    for name in names:
        raw = np.nan_to_num(rec.channel(index[name]))
        act = None
        if (m := _RAW.match(name)) and int(m.group(1)) in activated:
            act = np.asarray(rec.channel(activated[int(m.group(1))]))
        out[name] = ChannelData(float(rec.rate), raw, act)
    return out
