"""The analysis of one C3D recording: ``analyze(source) -> SessionResult``.

Pipeline per EMG channel (channels one at a time, so peak memory stays near one channel's
working set whatever the channel count): read -> validate -> zero-phase band-pass ->
RMS envelope -> contractions -> spectra -> metrics. Every choice made is written into the
result's ``processing`` (ISEK-style reporting), with ``ANALYSIS_VERSION``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import c3d as c3dmod
from .detect import Detection, agreement, detect_contractions
from .errors import InvalidOptionsError, SignalQualityError
from .filters import bandpass, design_bandpass, rms_envelope
from .metrics import (
    clipped_fraction,
    estimate_mvc,
    left_right_pairs,
    mains_fraction,
    rates,
    signal_quality,
    symmetry,
)
from .results import ChannelResult, Contraction, SessionResult
from .spectral import (
    fi_nsm5,
    mean_frequency,
    median_frequency,
    segment_spectra,
    trend,
    window_series,
)

#: bumped whenever a change can alter a result for the same file and options
ANALYSIS_VERSION = "1.0.0"

#: below this, no baseline, envelope or spectrum means anything
MIN_DURATION_S = 0.5


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """Every tunable of the analysis, with the clinical protocol's defaults.

    Attributes
    ----------
    highpass_hz, lowpass_hz : float
        Band-pass cut-offs (20-450 Hz); the top one is clipped below Nyquist.
    filter_order : int
        Butterworth order (4; forward-backward filtering makes it 8 effective).
    envelope_window_ms : float
        RMS envelope window (50 ms).
    baseline_window_ms : float
        Length of the quietest stretch taken as rest (1000 ms).
    onset_sd, offset_sd, refine_sd : float
        Detection levels above rest, in rest SDs (see ``emg_core.detect``).
    min_contraction_ms, merge_gap_ms, max_contraction_ms : float
        Drop shorter contractions (100), merge closer ones (200), split longer ones (10000).
    mvc : mapping of str to float
        Given MVC per channel label, in the channel's unit; other channels get an estimate.
    mvc_window_ms : float
        Window of the MVC estimate (best 500 ms of the envelope).
    mvc_percentage : float
        Intensity threshold as % of MVC (75).
    duration_threshold_ms : float
        Minimum duration of a good contraction (2000).
    expected_contractions : int
        Contractions the protocol asks for per channel (12).
    include : str or None
        Regular expression selecting the EMG channels by label (overrides discovery).
    spectral_window_s : float
        Window of the fatigue series (1 s).
    welch_segment_ms : float
        Welch segment length (250 ms, Hann, 50 % overlap).
    """

    highpass_hz: float = 20.0
    lowpass_hz: float = 450.0
    filter_order: int = 4
    envelope_window_ms: float = 50.0
    baseline_window_ms: float = 1000.0
    onset_sd: float = 8.0
    offset_sd: float = 5.0
    refine_sd: float = 2.0
    min_contraction_ms: float = 100.0
    merge_gap_ms: float = 200.0
    max_contraction_ms: float = 10_000.0
    mvc: Mapping[str, float] = field(default_factory=dict)
    mvc_window_ms: float = 500.0
    mvc_percentage: float = 75.0
    duration_threshold_ms: float = 2000.0
    expected_contractions: int = 12
    include: str | None = None
    spectral_window_s: float = 1.0
    welch_segment_ms: float = 250.0

    def __post_init__(self) -> None:
        # a read-only copy: the caller's dict cannot change a frozen options object later
        mvc = dict(self.mvc or {})
        for label, value in mvc.items():
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InvalidOptionsError(
                    f"the MVC given for channel {label!r} must be a positive number, not {value!r}"
                )
        object.__setattr__(self, "mvc", _FrozenDict({str(k): float(v) for k, v in mvc.items()}))
        checks = [
            (0 < self.highpass_hz < self.lowpass_hz, "highpass_hz must be > 0 and < lowpass_hz"),
            (1 <= self.filter_order <= 10, "filter_order must be between 1 and 10"),
            (self.envelope_window_ms > 0, "envelope_window_ms must be > 0"),
            (self.baseline_window_ms > 0, "baseline_window_ms must be > 0"),
            (
                self.onset_sd >= self.offset_sd >= self.refine_sd >= 0,
                "need onset_sd >= offset_sd >= refine_sd >= 0",
            ),
            (self.min_contraction_ms >= 0, "min_contraction_ms must be >= 0"),
            (self.merge_gap_ms >= 0, "merge_gap_ms must be >= 0"),
            (
                self.max_contraction_ms > self.min_contraction_ms,
                "max_contraction_ms must exceed min_contraction_ms",
            ),
            (self.mvc_window_ms > 0, "mvc_window_ms must be > 0"),
            (0 < self.mvc_percentage <= 200, "mvc_percentage must be in (0, 200]"),
            (self.duration_threshold_ms >= 0, "duration_threshold_ms must be >= 0"),
            (self.expected_contractions >= 1, "expected_contractions must be >= 1"),
            (self.spectral_window_s > 0, "spectral_window_s must be > 0"),
            (self.welch_segment_ms > 0, "welch_segment_ms must be > 0"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise InvalidOptionsError(f"invalid analysis options: {message}")

    def detection_kwargs(self) -> dict[str, float]:
        """Keyword arguments of :func:`emg_core.detect.detect_contractions` (seconds, SDs)."""
        return {
            "onset_sd": self.onset_sd,
            "offset_sd": self.offset_sd,
            "refine_sd": self.refine_sd,
            "baseline_window_s": self.baseline_window_ms / 1000,
            "min_duration_s": self.min_contraction_ms / 1000,
            "merge_gap_s": self.merge_gap_ms / 1000,
            "max_duration_s": self.max_contraction_ms / 1000,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for a process boundary or the result's ``processing``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["mvc"] = dict(self.mvc)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AnalysisOptions:
        """Build options from :meth:`to_dict` output; unknown keys are an error, not ignored."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidOptionsError(f"unknown analysis options: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidOptionsError(f"invalid analysis options: {exc}") from None


class _FrozenDict(dict):
    """A dict that refuses changes (keeps ``AnalysisOptions`` effectively immutable)."""

    def _readonly(self, *args, **kwargs):
        raise TypeError("AnalysisOptions.mvc is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        # pickle through the constructor: the default path would call the refused __setitem__
        return (_FrozenDict, (dict(self),))


def analyze(
    source: bytes | str | os.PathLike,
    *,
    options: AnalysisOptions | None = None,
    name: str | None = None,
) -> SessionResult:
    """Analyse one C3D recording.

    Parameters
    ----------
    source : bytes, str or os.PathLike
        The C3D file's content, or its path.
    options : AnalysisOptions, optional
        Defaults to ``AnalysisOptions()``.
    name : str, optional
        The file's name for the result (and for a recording time read from a GHOSTLY-style
        file name); defaults to the path's base name, or ``"<bytes>"``.

    Returns
    -------
    SessionResult

    Raises
    ------
    EmgError
        A subclass with a readable sentence: ``C3DFormatError``, ``NoEmgChannelsError``,
        ``SamplingRateError``, ``SignalQualityError`` or ``InvalidOptionsError``.
    """
    opts = options if options is not None else AnalysisOptions()
    if name is None:
        name = (
            os.path.basename(os.fspath(source))
            if isinstance(source, str | os.PathLike)
            else "<bytes>"
        )
    rec = c3dmod.read_c3d(source)
    selection = c3dmod.discover_emg(rec, opts.include)
    rate = c3dmod.check_rate(rec, opts.lowpass_hz)
    if rec.duration_s < MIN_DURATION_S:
        raise SignalQualityError(
            f"the recording lasts {rec.duration_s * 1000:.0f} ms; at least "
            f"{MIN_DURATION_S * 1000:.0f} ms are needed to tell rest from contraction"
        )
    filt = design_bandpass(rate, opts.highpass_hz, opts.lowpass_hz, opts.filter_order)

    channels: list[ChannelResult] = []
    flat: list[str] = []
    methods: dict[str, str] = {}
    for index in selection.indices:
        label = rec.labels[index]
        hint = None
        if index in selection.activated:
            # only "active or not" matters: a byte per sample instead of eight
            hint = np.nan_to_num(rec.channel(selection.activated[index])) > 0
        # the raw samples are handed over, not kept here, so the channel can free them early
        result = _analyse_channel(
            label, rec.units[index], rec.channel(index), hint, rate, filt, opts
        )
        methods[label] = result.mvc_method
        if result.signal_quality == 0.0 and result.rms == 0.0:
            flat.append(label)
        channels.append(result)
    if len(flat) == len(channels):
        raise SignalQualityError(
            f"every EMG channel is flat (zero variance): {', '.join(repr(s) for s in flat)}; "
            "the sensors recorded nothing"
        )

    live = [c for c in channels if c.name not in flat]
    overall = float(np.mean([c.compliance_rate for c in live])) if live else 0.0
    labels = [c.name for c in channels]
    pairs = left_right_pairs(labels, ghostly=selection.method == "ghostly")
    sym = _session_symmetry(channels, pairs)
    processing = {
        "analysis_version": ANALYSIS_VERSION,
        "channel_selection": {
            "method": selection.method,
            "channels": labels,
            "activated_hints": {
                rec.labels[i]: rec.labels[j] for i, j in selection.activated.items()
            },
            "flat_channels": flat,
        },
        "sampling_rate_hz": rate,
        "filter": filt.describe(),
        "rectification": "full-wave (squared inside the RMS)",
        "envelope": {"method": "moving RMS, centred", "window_ms": opts.envelope_window_ms},
        "detection": {
            "method": "Hodges-Bui baseline (quietest window) with hysteresis",
            "baseline_window_ms": opts.baseline_window_ms,
            "onset_sd": opts.onset_sd,
            "offset_sd": opts.offset_sd,
            "refine_sd": opts.refine_sd,
            "min_contraction_ms": opts.min_contraction_ms,
            "merge_gap_ms": opts.merge_gap_ms,
            "max_contraction_ms": opts.max_contraction_ms,
        },
        "mvc": {
            "percentage": opts.mvc_percentage,
            "meets_mvc": "best mvc-window mean of the envelope inside the contraction >= threshold",
            "estimate_window_ms": opts.mvc_window_ms,
            "method_per_channel": methods,
        },
        "duration_threshold_ms": opts.duration_threshold_ms,
        "expected_contractions": opts.expected_contractions,
        "spectral": {
            "psd": "Welch, Hann window, 50% overlap, restricted to the pass band",
            "segment_ms": opts.welch_segment_ms,
            "window_s": opts.spectral_window_s,
            "indices": ["mpf", "mdf (interpolated in bin)", "fi_nsm5 (Dimitrov)"],
            "slopes": "least squares over active windows; %/s of the fitted first value",
        },
        "symmetry": "1 - |L - R| / (L + R) of compliance rates (time under tension when both 0)",
        "options": opts.to_dict(),
    }
    return SessionResult(
        file=name,
        analysis_version=ANALYSIS_VERSION,
        processing=processing,
        recorded_at=c3dmod.recorded_at(rec, name),
        duration_s=float(rec.duration_s),
        metadata=c3dmod.game_metadata(rec),
        overall_compliance=overall,
        symmetry=sym,
        channels=tuple(channels),
    )


def channel_envelopes(
    source: bytes | str | os.PathLike, *, options: AnalysisOptions | None = None
) -> dict[str, tuple[float, np.ndarray]]:
    """The RMS envelope of each EMG channel, exactly as :func:`analyze` computes it.

    For plots and inspection: ``{label: (rate_hz, envelope)}``. Flat channels give zeros.
    """
    opts = options if options is not None else AnalysisOptions()
    rec = c3dmod.read_c3d(source)
    selection = c3dmod.discover_emg(rec, opts.include)
    rate = c3dmod.check_rate(rec, opts.lowpass_hz)
    filt = design_bandpass(rate, opts.highpass_hz, opts.lowpass_hz, opts.filter_order)
    out = {}
    for index in selection.indices:
        raw = np.nan_to_num(rec.channel(index))
        env = rms_envelope(bandpass(raw, filt), rate, opts.envelope_window_ms / 1000)
        out[rec.labels[index]] = (rate, env)
    return out


@dataclass(frozen=True, slots=True)
class ChannelTrace:
    """One channel's signals as the analysis saw them, for plots and inspection.

    Attributes
    ----------
    rate : float
        Sampling rate, Hz.
    raw : ndarray
        The samples as read from the file, in the channel's unit.
    envelope : ndarray
        The RMS envelope the contractions were detected on (after artefact and mains cleaning).
    masked : ndarray of bool
        Samples excluded as artefact (never part of a contraction, MVC window or spectrum).
    """

    rate: float
    raw: np.ndarray
    envelope: np.ndarray
    masked: np.ndarray


def channel_traces(
    source: bytes | str | os.PathLike, *, options: AnalysisOptions | None = None
) -> dict[str, ChannelTrace]:
    """Raw signal, envelope and artefact mask of each EMG channel, as :func:`analyze` has them."""
    opts = options if options is not None else AnalysisOptions()
    rec = c3dmod.read_c3d(source)
    selection = c3dmod.discover_emg(rec, opts.include)
    rate = c3dmod.check_rate(rec, opts.lowpass_hz)
    filt = design_bandpass(rate, opts.highpass_hz, opts.lowpass_hz, opts.filter_order)
    out = {}
    for index in selection.indices:
        raw = np.nan_to_num(rec.channel(index))
        env = rms_envelope(bandpass(raw, filt), rate, opts.envelope_window_ms / 1000)
        out[rec.labels[index]] = ChannelTrace(rate, raw, env, np.zeros(raw.size, dtype=bool))
    return out


def _session_symmetry(channels: list[ChannelResult], pairs: list[tuple[int, int]]) -> float | None:
    values = []
    for left, right in pairs:
        a, b = channels[left], channels[right]
        if a.compliance_rate or b.compliance_rate:
            values.append(symmetry(a.compliance_rate, b.compliance_rate))
        elif a.time_under_tension_ms or b.time_under_tension_ms:
            values.append(symmetry(a.time_under_tension_ms, b.time_under_tension_ms))
    return float(np.mean(values)) if values else None


def _none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _analyse_channel(
    label: str,
    unit: str,
    raw: np.ndarray,
    hint: np.ndarray | None,
    rate: float,
    filt,
    opts: AnalysisOptions,
) -> ChannelResult:
    n = raw.size
    bad = np.count_nonzero(~np.isfinite(raw))
    if bad:
        raise SignalQualityError(
            f"EMG channel {label!r} holds {bad} non-finite samples (NaN or infinity): "
            "the recording is damaged"
        )
    given = opts.mvc.get(label)
    if n == 0 or not np.any(raw != raw[0]):
        return _flat_channel(label, unit, rate, given, opts)

    clipped = clipped_fraction(raw)
    emg = bandpass(raw, filt)
    del raw  # peak memory: the raw copy is not needed once filtered
    envelope = rms_envelope(emg, rate, opts.envelope_window_ms / 1000)
    det = detect_contractions(envelope, rate, **opts.detection_kwargs())
    if given is not None:
        mvc, method = given, "given"
    else:
        mvc, method = (
            estimate_mvc(envelope, rate, opts.mvc_window_ms / 1000),
            "estimated_best_500ms",
        )
    threshold = mvc * opts.mvc_percentage / 100

    spectra = segment_spectra(
        emg, rate, (filt.low_hz, filt.high_hz), segment_s=opts.welch_segment_ms / 1000
    )
    contractions = _contractions(det, envelope, spectra, rate, threshold, opts)
    total = len(contractions)
    good = sum(c.is_good for c in contractions)
    mvc_ok = sum(c.meets_mvc for c in contractions)
    dur_ok = sum(c.meets_duration for c in contractions)

    # spectral summary over the contractions (rest noise has no fatigue to measure)
    mpf = mdf = fi = None
    fi_rel = mpf_slope = mdf_slope = mpf_pct = mdf_pct = None
    if total:
        segs = [
            spectra.mean_between(int(s), int(e)) for s, e in zip(det.starts, det.ends, strict=True)
        ]
        weights = (det.ends - det.starts).astype(np.float64)
        pooled = np.average(np.vstack(segs), axis=0, weights=weights)
        mpf = _none(mean_frequency(spectra.freqs, pooled))
        mdf = _none(median_frequency(spectra.freqs, pooled))
        fi = _none(fi_nsm5(spectra.freqs, pooled))
        series = window_series(spectra, n, opts.spectral_window_s)
        active = _active_windows(series.times_s, det, rate, opts.spectral_window_s)
        series = series.select(active)
        if (t := trend(series.times_s, series.mpf)) is not None:
            mpf_slope, mpf_pct = _none(t.slope), _none(t.slope_pct)
        if (t := trend(series.times_s, series.mdf)) is not None:
            mdf_slope, mdf_pct = _none(t.slope), _none(t.slope_pct)
        if (t := trend(series.times_s, series.fi)) is not None and t.first > 0:
            fi_rel = _none(t.last / t.first)

    whole = spectra.psd.mean(axis=0) if spectra.psd.shape[0] else np.zeros(0)
    quality = signal_quality(
        envelope, det.baseline.mean, mains_fraction(spectra.freqs, whole), clipped
    )
    agree = agreement(
        det.starts,
        det.ends,
        hint,
        rate,
        merge_gap_s=opts.merge_gap_ms / 1000,
        min_duration_s=opts.min_contraction_ms / 1000,
    ) if hint is not None else None  # fmt: skip
    return ChannelResult(
        name=label,
        sampling_rate=rate,
        unit=unit,
        mvc_value=float(mvc),
        mvc_threshold=float(threshold),
        mvc_method=method,
        duration_threshold_ms=float(opts.duration_threshold_ms),
        expected_contractions=int(opts.expected_contractions),
        contractions_total=total,
        contractions_good=good,
        contractions_mvc_compliant=mvc_ok,
        contractions_duration_compliant=dur_ok,
        **rates(total, good, mvc_ok, dur_ok, opts.expected_contractions),
        time_under_tension_ms=float(sum(c.duration_ms for c in contractions)),
        rms=float(np.sqrt(np.mean(np.square(emg)))),
        mav=float(np.mean(np.abs(emg))),
        mpf_hz=mpf,
        mdf_hz=mdf,
        fi_nsm5=fi,
        fi_nsm5_relative=fi_rel,
        mpf_slope_hz_per_s=mpf_slope,
        mdf_slope_hz_per_s=mdf_slope,
        mpf_slope_pct_per_s=mpf_pct,
        mdf_slope_pct_per_s=mdf_pct,
        signal_quality=quality,
        activation_agreement=agree,
        contractions=tuple(contractions),
    )


def _contractions(
    det: Detection,
    envelope: np.ndarray,
    spectra,
    rate: float,
    threshold: float,
    opts: AnalysisOptions,
) -> list[Contraction]:
    if len(det) == 0:
        return []
    starts, ends = det.starts, det.ends
    # contractions are disjoint and sorted: the max from each start to the next start is the
    # contraction's own peak because the envelope between them is below the onset level
    peaks = np.maximum.reduceat(envelope, starts)
    csum = np.concatenate(([0.0], np.cumsum(envelope)))
    means = (csum[ends] - csum[starts]) / (ends - starts)
    # "reaches X % MVC" is judged on the contraction's best window of the same length as the
    # MVC estimate: the raw peak of a 50 ms RMS rides ~15 % noise and would pass weak efforts
    w = max(1, round(opts.mvc_window_ms / 1000 * rate))
    out = []
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        start_ms, end_ms = 1000 * s / rate, 1000 * e / rate
        duration = end_ms - start_ms
        psd = spectra.mean_between(s, e)
        if e - s > w:
            sustained = float(np.max(csum[s + w : e + 1] - csum[s : e + 1 - w]) / w)
        else:
            sustained = float(means[i])
        meets_mvc = bool(sustained >= threshold)
        meets_duration = bool(duration >= opts.duration_threshold_ms)
        out.append(
            Contraction(
                index=i,
                start_ms=start_ms,
                end_ms=end_ms,
                duration_ms=duration,
                peak_amplitude=float(peaks[i]),
                mean_amplitude=float(means[i]),
                meets_mvc=meets_mvc,
                meets_duration=meets_duration,
                is_good=meets_mvc and meets_duration,
                mpf_hz=_none(mean_frequency(spectra.freqs, psd)) if psd is not None else None,
                mdf_hz=_none(median_frequency(spectra.freqs, psd)) if psd is not None else None,
            )
        )
    return out


def _active_windows(
    times_s: np.ndarray, det: Detection, rate: float, window_s: float
) -> np.ndarray:
    """Windows at least half covered by contractions (only those carry fatigue information)."""
    if times_s.size == 0:
        return np.zeros(0, dtype=bool)
    lo = (times_s - window_s / 2) * rate
    hi = (times_s + window_s / 2) * rate
    s = det.starts.astype(np.float64)[None, :]
    e = det.ends.astype(np.float64)[None, :]
    covered = np.clip(np.minimum(hi[:, None], e) - np.maximum(lo[:, None], s), 0, None).sum(axis=1)
    return covered >= 0.5 * window_s * rate


def _flat_channel(
    label: str, unit: str, rate: float, given: float | None, opts: AnalysisOptions
) -> ChannelResult:
    mvc = given or 0.0
    return ChannelResult(
        name=label,
        sampling_rate=rate,
        unit=unit,
        mvc_value=float(mvc),
        mvc_threshold=float(mvc * opts.mvc_percentage / 100),
        mvc_method="given" if given is not None else "estimated_best_500ms",
        duration_threshold_ms=float(opts.duration_threshold_ms),
        expected_contractions=int(opts.expected_contractions),
        contractions_total=0,
        contractions_good=0,
        contractions_mvc_compliant=0,
        contractions_duration_compliant=0,
        **rates(0, 0, 0, 0, opts.expected_contractions),
        time_under_tension_ms=0.0,
        rms=0.0,
        mav=0.0,
        mpf_hz=None,
        mdf_hz=None,
        fi_nsm5=None,
        fi_nsm5_relative=None,
        mpf_slope_hz_per_s=None,
        mdf_slope_hz_per_s=None,
        mpf_slope_pct_per_s=None,
        mdf_slope_pct_per_s=None,
        signal_quality=0.0,
        activation_agreement=None,
        contractions=(),
    )


__all__ = ["ANALYSIS_VERSION", "MIN_DURATION_S", "AnalysisOptions", "analyze", "channel_envelopes"]
