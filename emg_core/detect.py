"""Contraction detection on an EMG envelope, built for real recordings.

Real surface EMG at rest is not stationary: its level drifts (10 µV at the start of a session,
3 µV later), it carries brief blips of 5-20 times rest, and a weak channel's contractions may
stand only 3-4 times above it while a strong one's stand 100 times above. A threshold set from
the standard deviation of one quiet second (Hodges & Bui) lies inside that drift and those blips
and counts rest as contractions. Here every level is a ratio over a rest level that follows the
recording, and the ratios grow with the channel's own range of activity:

1. **Rest** ``r(t)``: the envelope's ``rest_quantile`` percentile in each ``rest_block_s`` block,
   then the lowest of those within ``rest_window_s`` around ``t``, capped at ``MAX_DRIFT`` times
   the recording's quieter blocks. No quiet second is assumed: between two bursts a few hundred
   ms of rest are enough.
2. **Contrast** ``D``: the strongest sustained activity (``sustain_s`` moving mean, masked samples
   excluded) over the median rest level.
3. **Levels**, as multiples of ``r(t)``: onset ``clip(D ** onset_exponent, onset_min, onset_max)``
   (half-way between rest and activity in dB by default), offset
   ``clip(D ** offset_exponent, offset_min, onset)``, and ``refine_ratio`` for the edges.
4. A contraction is a run above the offset level (hysteresis) whose ``sustain_s`` moving mean
   reaches the onset level somewhere: a blip of 20-150 ms, however tall, does not stay up long
   enough. Runs end wherever the envelope returns below the offset level, so bursts separated by
   rest are never one contraction.
5. Edges move back (forward) to where the envelope leaves (returns to) ``refine_ratio * r(t)``;
   contractions less than ``merge_gap_s`` apart are merged, those longer than ``max_duration_s``
   split at their deepest dip, those shorter than ``min_duration_s`` dropped.
6. **Weak efforts** are not contractions: a run whose peak (the envelope's ``split_smooth_s``
   moving mean) stays below ``min_peak_fraction`` of the channel's typical strong contraction
   (the median peak of its strongest quarter) is dropped and counted apart. Real sessions hold
   such stirrings at 10-25 % of the patient's contractions, well above rest; the game counts
   none of them, and the contractions it counts all reach 30 % and more (docs/validation.md).

Masked samples (artefacts, see ``emg_core.artefacts``) count as rest for detection, so nothing
starts or ends on them; but two runs whose gap is mostly masked and at most ``MAX_BRIDGE_S`` long
are one contraction: a burst the sensor lost for a moment, not two bursts. When the channel's
activity does not stand out of its rest (``D`` below ``min_contrast``) nothing is counted and the
detection says so.

Everything is index arithmetic on numpy arrays; nothing loops over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .artefacts import runs
from .filters import block_mean, moving_mean, prefix_sum

#: a recording holds at least this many rest blocks, however short
MIN_BLOCKS = 20
#: how far above the recording's quieter blocks the local rest level may drift
MAX_DRIFT = 4.0
#: a dropout up to this long inside a burst leaves one contraction (GHOSTLY's last ~270 ms)
MAX_BRIDGE_S = 1.0
#: the typical strong contraction is the median peak of at least this many of the strongest
STRONG_MIN = 3


@dataclass(frozen=True, slots=True)
class Detection:
    """Contractions of one channel as sample-index pairs ``[start, end)``, and how they were found.

    Attributes
    ----------
    starts, ends : ndarray of int64
        Onset and offset sample indices, ``starts[i] < ends[i] <= starts[i + 1]``.
    rest_level : float
        Median over the recording of the rest level ``r(t)``, envelope units.
    onset_ratio, offset_ratio, refine_ratio : float
        The levels as multiples of ``r(t)``.
    contrast : float
        ``D``: strongest sustained activity over ``rest_level``.
    rest_curve : ndarray
        ``r(t)`` per block of ``block`` samples (the last block may be partial).
    block : int
        Samples per entry of ``rest_curve``.
    enough_contrast : bool
        False when activity does not stand out of rest, so nothing was counted.
    rest_share : float
        Share of the unmasked envelope below the offset level: little rest means the rest
        level comes from the recording's quietest moments only.
    weak_efforts : int
        Runs dropped because their peak stayed below ``min_peak_fraction`` of the typical
        strong contraction.
    typical_peak : float
        That typical peak (median peak of the strongest quarter), envelope units; 0 without
        contractions.
    """

    starts: np.ndarray
    ends: np.ndarray
    rest_level: float
    onset_ratio: float
    offset_ratio: float
    refine_ratio: float
    contrast: float
    rest_curve: np.ndarray
    block: int
    enough_contrast: bool
    rest_share: float = 1.0
    weak_efforts: int = 0
    typical_peak: float = 0.0

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def onset_level(self) -> float:
        """Onset level at the median rest, envelope units."""
        return self.onset_ratio * self.rest_level

    @property
    def offset_level(self) -> float:
        """Offset level at the median rest, envelope units."""
        return self.offset_ratio * self.rest_level


def rest_curve(
    envelope: np.ndarray,
    rate: float,
    valid: np.ndarray | None = None,
    *,
    block_s: float = 0.25,
    window_s: float = 8.0,
    quantile: float = 10.0,
) -> tuple[np.ndarray, int]:
    """The rest level along the recording, one value per block.

    Parameters
    ----------
    envelope : ndarray, shape (n_samples,)
    rate : float
        Sampling rate, Hz.
    valid : ndarray of bool, optional
        Samples that may be used (False: masked artefact).
    block_s : float
        Block length, seconds.
    window_s : float
        Each block's rest is the lowest block quantile within this window centred on it.
    quantile : float
        Percentile of the envelope taken in each block.

    Returns
    -------
    curve : ndarray, shape (n_blocks,)
        Rest level per block (``nan`` where every block of the window is masked).
    block : int
        Samples per block.
    """
    n = envelope.size
    # a short recording gets shorter blocks: in a 1.7 s file every 250 ms block holds some
    # activity, while the rest between bursts still fills many 85 ms ones
    block = max(1, min(round(block_s * rate), n // MIN_BLOCKS))
    n_blocks = max(1, -(-n // block))
    # the envelope is smooth over its window: one sample in every ~5 ms keeps its quantiles
    step = max(1, min(block, round(0.005 * rate)))
    per = -(-block // step)
    padded = np.full(n_blocks * block, np.inf)
    padded[:n] = envelope
    if valid is not None:
        padded[:n][~valid] = np.inf  # masked samples sort above everything: never "rest"
    if n % block:
        # a short last block: repeat its own samples rather than let padding count as data
        tail = padded[(n_blocks - 1) * block : n]
        padded[n:] = np.resize(tail, n_blocks * block - n)
    sampled = padded.reshape(n_blocks, block)[:, ::step][:, :per]
    k = min(sampled.shape[1] - 1, int(quantile / 100 * sampled.shape[1]))
    per_block = np.partition(sampled, k, axis=1)[:, k]
    finite = per_block[np.isfinite(per_block)]
    if finite.size:
        # a hold longer than the window would otherwise become its own "rest": the local
        # level may drift (real sessions: 3x over a minute) but not beyond the whole
        # recording's quieter blocks by more than MAX_DRIFT
        per_block = np.minimum(per_block, MAX_DRIFT * np.percentile(finite, 10))
    half = max(0, round(window_s / block_s / 2))
    if half and n_blocks > 1:
        ext = np.concatenate((np.full(half, np.inf), per_block, np.full(half, np.inf)))
        curve = sliding_window_view(ext, 2 * half + 1).min(axis=1)
    else:
        curve = per_block
    return np.where(np.isfinite(curve), curve, np.nan), block


def _run_max(x: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Maximum of ``x`` over each ``[start, end)`` (runs sorted, disjoint and non-empty)."""
    bounds = np.empty(2 * starts.size, dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts, ends
    # reduceat needs indices below len(x): a sentinel sample lets the last run end at n
    return np.maximum.reduceat(np.append(x, 0.0), bounds)[0::2]


def _split_valleys(
    smooth: np.ndarray,
    sustained: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    c_starts: np.ndarray,
    c_ends: np.ndarray,
    on: float,
    depth: float,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split runs at every valley ``depth`` times below both peaks around it.

    Bursts of a cluster are often joined by a stretch that never gets down to the offset level
    (the rest between them carries residual activity) yet lies ten times below the bursts: on a
    linear plot, as a therapist sees it, the envelope is back at zero there. ``smooth`` and
    ``sustained`` are on a grid of ``step`` samples (runs at ``c_starts``/``c_ends`` on it):
    a cut goes at the lowest point of every stretch lying ``depth`` times below the highest
    point on each side of it that reaches ``on`` (sustained level over rest). Pieces reaching
    no onset are dropped.
    """
    need = np.log(depth)
    out_s, out_e = [], []
    for s, e, cs, ce in zip(
        starts.tolist(), ends.tolist(), c_starts.tolist(), c_ends.tolist(), strict=True
    ):
        y = np.log(np.maximum(smooth[cs:ce], np.finfo(float).tiny))
        # only what reaches the onset level can tower over a valley
        peak = np.where(sustained[cs:ce] >= on, y, -np.inf)
        left = np.maximum.accumulate(peak)
        right = np.maximum.accumulate(peak[::-1])[::-1]
        deep = (y <= left - need) & (y <= right - need)
        if not deep.any():
            out_s.append(s)
            out_e.append(e)
            continue
        d_starts, d_ends = runs(deep)
        cuts = [s]
        for a, b in zip(d_starts.tolist(), d_ends.tolist(), strict=True):
            valley = a + int(np.argmin(y[a:b]))
            cuts.append(min(max((cs + valley) * step, cuts[-1] + 1), e - 1))
        cuts.append(e)
        # between two deep stretches may lie a bump that reaches no onset: not a contraction
        for k in range(len(cuts) - 1):
            lo, hi = cuts[k] // step - cs, -(-cuts[k + 1] // step) - cs
            if np.isfinite(peak[max(lo, 0) : max(hi, lo + 1)].max(initial=-np.inf)):
                out_s.append(cuts[k])
                out_e.append(cuts[k + 1])
    return np.asarray(out_s, dtype=np.int64), np.asarray(out_e, dtype=np.int64)


def _trim(
    z: np.ndarray, starts: np.ndarray, ends: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Shrink each run to its first and last sample above ``level``.

    A run cut at a valley keeps the valley's low stretch at its edge; trimmed, the edge is
    refined afterwards from where the burst really ends, like every other edge.
    """
    above = np.flatnonzero(z > level)
    if above.size == 0:
        return starts, ends
    first = above[np.minimum(np.searchsorted(above, starts), above.size - 1)]
    last = above[np.maximum(np.searchsorted(above, ends) - 1, 0)]
    inside = (first < ends) & (last >= starts)
    return np.where(inside, first, starts), np.where(inside, last + 1, ends)


def _merge(starts: np.ndarray, ends: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge index pairs (sorted by start) whose gap is at most ``gap`` samples."""
    if starts.size == 0:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    # a new group starts where the next start lies beyond everything before it plus the gap
    new = np.empty(starts.size, dtype=bool)
    new[0] = True
    new[1:] = starts[1:] > reach[:-1] + gap
    group_starts = starts[new]
    idx = np.flatnonzero(new)
    group_ends = np.maximum.reduceat(ends, idx)
    return group_starts, group_ends


def _split_long(
    starts: np.ndarray, ends: np.ndarray, smooth: np.ndarray, max_len: int, min_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split segments longer than ``max_len`` at their deepest dip until none is."""
    out_s, out_e = [], []
    todo = list(zip(starts.tolist(), ends.tolist(), strict=True))
    while todo:
        s, e = todo.pop()
        if e - s <= max_len:
            out_s.append(s)
            out_e.append(e)
            continue
        # cut at the deepest dip of the smoothed envelope, but not on the ramps: the cut must
        # leave the first part within max_len and neither part shorter than a quarter
        length = e - s
        quarter = max(min(length // 4, max_len // 2), min_len)
        lo, hi = max(e - max_len, s + quarter), min(s + max_len, e - quarter)
        if hi <= lo:  # longer than twice the maximum: peel off a first part, split the rest later
            lo, hi = s + max_len // 2, s + max_len
        cut = lo + int(np.argmin(smooth[lo:hi])) if hi > lo else (s + e) // 2
        todo.extend([(s, cut), (cut, e)])
    order = np.argsort(out_s)
    return np.asarray(out_s, dtype=np.int64)[order], np.asarray(out_e, dtype=np.int64)[order]


def _refine(
    z: np.ndarray, starts: np.ndarray, ends: np.ndarray, level: float, reach: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move each onset back, and each offset forward, to where ``z`` is at rest (``<= level``).

    Each edge looks at most ``reach`` samples away and never past the neighbouring contraction.
    Where the envelope does not get down to ``level`` in that stretch (the rest between two
    bursts of a cluster is often noisier than elsewhere), the edge goes to the lowest point of
    the stretch instead: the neighbours stay apart, split at the dip between them.
    """
    n = z.size
    new_starts = starts.copy()
    new_ends = ends.copy()
    lo = np.maximum(np.concatenate(([0], ends[:-1])), starts - reach)
    hi = np.minimum(np.concatenate((starts[1:], [n])), ends + reach)
    below = np.flatnonzero(z <= level)
    # the last rest sample before each onset and the first after each offset, all at once
    k = np.searchsorted(below, starts) - 1
    before = np.where(k >= 0, below[np.maximum(k, 0)], -1) if below.size else np.full_like(lo, -1)
    k = np.searchsorted(below, ends)
    after = (
        np.where(k < below.size, below[np.minimum(k, below.size - 1)], n)
        if below.size
        else (np.full_like(hi, n))
    )
    found = (before >= lo) & (starts > lo)
    new_starts[found] = before[found]
    found_end = (after < hi) & (hi > ends)
    new_ends[found_end] = after[found_end]
    # no rest within reach: the lowest point of the stretch (a handful of edges at most)
    for i in np.flatnonzero(~found & (starts > lo)).tolist():
        new_starts[i] = lo[i] + int(np.argmin(z[lo[i] : starts[i]]))
    for i in np.flatnonzero(~found_end & (hi > ends)).tolist():
        new_ends[i] = ends[i] + int(np.argmin(z[ends[i] : hi[i]]))
    # two edges may pick the same dip: give it to neither (contractions stay disjoint)
    new_ends[:-1] = np.minimum(new_ends[:-1], new_starts[1:])
    return new_starts, np.maximum(new_ends, new_starts + 1)


def _bridge_masked(
    starts: np.ndarray, ends: np.ndarray, valid: np.ndarray, max_gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Join neighbours whose gap is mostly masked: a dropout inside a burst is not a relaxation."""
    gaps_s, gaps_e = ends[:-1], starts[1:]
    masked = prefix_sum(~valid)
    share = (masked[gaps_e] - masked[gaps_s]) / np.maximum(gaps_e - gaps_s, 1)
    join = (gaps_e - gaps_s <= max_gap) & (share >= 0.5)
    if not join.any():
        return starts, ends
    new = np.concatenate(([True], ~join))
    idx = np.flatnonzero(new)
    return starts[new], np.maximum.reduceat(ends, idx)


def detect_contractions(
    envelope: np.ndarray,
    rate: float,
    *,
    valid: np.ndarray | None = None,
    rest_block_s: float = 0.25,
    rest_window_s: float = 8.0,
    rest_quantile: float = 50.0,
    onset_exponent: float = 0.55,
    onset_min: float = 3.0,
    onset_max: float = 30.0,
    onset_fraction: float = 0.12,
    offset_exponent: float = 0.35,
    offset_min: float = 2.0,
    refine_ratio: float = 1.2,
    refine_quantile: float = 90.0,
    refine_reach_s: float = 0.5,
    sustain_s: float = 0.25,
    split_depth: float = 4.0,
    split_smooth_s: float = 0.15,
    min_contrast: float = 4.0,
    min_duration_s: float = 0.1,
    merge_gap_s: float = 0.2,
    max_duration_s: float = 10.0,
    min_peak_fraction: float = 0.3,
) -> Detection:
    """Find contractions on one channel's envelope.

    Parameters
    ----------
    envelope : ndarray, shape (n_samples,)
        Non-negative envelope (e.g. 50 ms RMS of the band-passed EMG).
    rate : float
        Sampling rate in Hz.
    valid : ndarray of bool, optional
        False on masked artefact samples, which never belong to a contraction.
    rest_block_s, rest_window_s, rest_quantile : float
        How the rest level ``r(t)`` is followed (see :func:`rest_curve`).
    onset_exponent, onset_min, onset_max : float
        Onset level ``clip(D ** onset_exponent, onset_min, onset_max) * r(t)``.
    offset_exponent, offset_min : float
        Offset (hysteresis) level ``clip(D ** offset_exponent, offset_min, onset) * r(t)``.
    refine_ratio, refine_quantile, refine_reach_s : float
        Edges are moved to where the envelope crosses the ``refine_quantile`` percentile of
        the envelope at rest (over ``r(t)``, at least ``refine_ratio``), at most
        ``refine_reach_s`` away (or to the lowest point within that reach).
    sustain_s : float
        A contraction's moving mean over this long must reach the onset level.
    split_depth, split_smooth_s : float
        A run is split at a valley this many times below the peaks on both of its sides, on the
        moving mean of the envelope over ``split_smooth_s``.
    min_contrast : float
        Below this contrast ``D`` nothing is counted.
    min_duration_s, merge_gap_s, max_duration_s : float
        Drop shorter contractions, merge closer ones, split longer ones (seconds).
    min_peak_fraction : float
        Drop runs whose peak stays below this fraction of the typical strong contraction
        (0 keeps them all).

    Returns
    -------
    Detection
        Sorted, non-overlapping ``[start, end)`` pairs with ``end > start``.
    """
    n = envelope.size
    empty = np.empty(0, dtype=np.int64)
    curve, block = rest_curve(
        envelope, rate, valid, block_s=rest_block_s, window_s=rest_window_s, quantile=rest_quantile
    )
    finite = curve[np.isfinite(curve)]
    rest = float(np.median(finite)) if finite.size else 0.0
    # a digitally silent rest (zeros) has no level to be a multiple of: keep levels above it
    floor = max(rest, 1e-9 * float(envelope.max(initial=0.0)), np.finfo(float).tiny)
    curve = np.where(np.isfinite(curve), np.maximum(curve, floor * 1e-3), floor)

    # the envelope in multiples of the local rest; masked samples are rest
    z = np.repeat(curve, block)[:n]
    np.divide(envelope, z, out=z)
    if valid is not None:
        z[~valid] = 0.0
    # levels sustained over hundreds of ms need no sample-by-sample resolution: a ~5 ms grid
    # keeps the work and memory a fraction of the signal's
    step = max(1, round(0.005 * rate))
    coarse_rate = rate / step
    sustained = moving_mean(block_mean(z, step), coarse_rate, sustain_s) if n else np.zeros(0)
    partial = None  # coarse blocks holding a masked sample
    if valid is not None and not valid.all():
        partial = block_mean(valid.astype(np.float64), step) < 1.0
        sustained[partial] = 0.0
    contrast = float(sustained.max(initial=0.0))
    on = (
        float(np.clip(contrast**onset_exponent, onset_min, onset_max))
        if contrast > 0
        else onset_min
    )
    on = max(on, onset_fraction * contrast)
    off = float(np.clip(contrast**offset_exponent, offset_min, on)) if contrast > 0 else offset_min
    # edges go back to where the envelope is within rest's own spread: just above the rest
    # level on a steady noise floor, higher on a flickering one (where 1.2x rest is crossed
    # by rest itself every few tens of ms and would drag edges into the rest)
    quiet = z[::step]
    quiet = quiet[(quiet > 0) & (quiet < off)]
    ceiling = float(np.percentile(quiet, refine_quantile)) if quiet.size else refine_ratio
    refine = min(max(refine_ratio, ceiling), off)

    counted = z[::step] if valid is None else z[::step][valid[::step]]
    rest_share = float(np.mean(counted <= off)) if counted.size else 1.0

    def result(
        starts: np.ndarray,
        ends: np.ndarray,
        enough: bool = True,
        weak: int = 0,
        typical: float = 0.0,
    ) -> Detection:
        return Detection(
            starts,
            ends,
            rest,
            on,
            off,
            refine,
            contrast,
            curve,
            block,
            bool(enough),
            rest_share,
            weak,
            typical,
        )

    if n == 0 or contrast < min_contrast:
        return result(empty, empty, enough=n == 0)

    starts, ends = runs(z > off)
    # dips below the offset level shorter than the merge gap are flicker, not a relaxation
    starts, ends = _merge(starts, ends, round(merge_gap_s * rate))
    # the runs on the coarse grid (a run covers at least one block)
    c_starts = starts // step
    c_ends = np.maximum(c_starts + 1, -(-ends // step))
    if starts.size:
        # a run counts when its sustained level reaches the onset level somewhere
        keep = _run_max(sustained, c_starts, c_ends) >= on
        starts, ends, c_starts, c_ends = starts[keep], ends[keep], c_starts[keep], c_ends[keep]
    # valleys and peaks are judged on the envelope itself: dividing by a local rest level that
    # rises inside a long hold would carve a valley into its plateau
    smooth = moving_mean(block_mean(envelope, step), coarse_rate, split_smooth_s)
    if partial is not None:
        smooth[partial] = 0.0
    if starts.size and split_depth > 1:
        starts, ends = _split_valleys(
            smooth, sustained, starts, ends, c_starts, c_ends, on, split_depth, step
        )
    del sustained
    if starts.size == 0:
        return result(empty, empty)
    starts, ends = _trim(z, starts, ends, off)

    starts, ends = _refine(z, starts, ends, refine, round(refine_reach_s * rate))
    max_len = max(1, round(max_duration_s * rate))
    min_len = max(1, round(min_duration_s * rate))
    if np.any(ends - starts > max_len):
        starts, ends = _split_long(starts, ends, moving_mean(z, rate, 0.5), max_len, min_len)
    if valid is not None and starts.size > 1 and not valid.all():
        starts, ends = _bridge_masked(starts, ends, valid, round(MAX_BRIDGE_S * rate))
    keep = ends - starts >= min_len
    starts, ends = starts[keep].astype(np.int64), ends[keep].astype(np.int64)
    if starts.size == 0:
        return result(starts, ends)
    c_starts = np.minimum(starts // step, smooth.size - 1)
    peaks = _run_max(smooth, c_starts, np.maximum(c_starts + 1, -(-ends // step)))
    strongest = np.sort(peaks)[::-1][: max(STRONG_MIN, peaks.size // 4)]
    typical = float(np.median(strongest))
    keep = peaks >= min_peak_fraction * typical
    weak = int(keep.size - np.count_nonzero(keep))
    return result(starts[keep], ends[keep], weak=weak, typical=typical)


def agreement(
    starts: np.ndarray,
    ends: np.ndarray,
    hint: np.ndarray,
    rate: float,
    *,
    merge_gap_s: float = 0.2,
    min_duration_s: float = 0.1,
) -> float | None:
    """How well detected contractions agree with a hint channel such as GHOSTLY's ``activated``.

    The hint's active stretches (``hint > 0``) get the same merge and minimum-duration rules as
    detections; the score is the F1 of the two sets of events, where an event counts as found
    when it overlaps an event of the other set.

    Parameters
    ----------
    starts, ends : ndarray of int
        Detected contractions as ``[start, end)`` sample indices.
    hint : ndarray, shape (n_samples,)
        The hint channel (0 = inactive).
    rate : float
        Sampling rate in Hz.

    Returns
    -------
    float or None
        1.0 for a one-to-one match, 0.0 for none; ``None`` when neither has any event.
    """
    h_starts, h_ends = runs(np.nan_to_num(hint) > 0)
    h_starts, h_ends = _merge(h_starts, h_ends, round(merge_gap_s * rate))
    keep = h_ends - h_starts >= max(1, round(min_duration_s * rate))
    h_starts, h_ends = h_starts[keep], h_ends[keep]
    if starts.size == 0 and h_starts.size == 0:
        return None
    if starts.size == 0 or h_starts.size == 0:
        return 0.0

    def found(a_s: np.ndarray, a_e: np.ndarray, b_s: np.ndarray, b_e: np.ndarray) -> int:
        # b's events are sorted and disjoint: the candidate overlapping a is found by bisection
        j = np.searchsorted(b_e, a_s, side="right")
        j = np.minimum(j, b_s.size - 1)
        return int(np.count_nonzero((b_s[j] < a_e) & (b_e[j] > a_s)))

    recall = found(starts, ends, h_starts, h_ends) / starts.size
    precision = found(h_starts, h_ends, starts, ends) / h_starts.size
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


__all__ = ["Detection", "agreement", "detect_contractions", "rest_curve"]
