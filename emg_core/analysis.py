"""The analysis of one C3D recording: ``analyze(source) -> SessionResult``.

Pipeline per EMG channel (channels one at a time, so peak memory stays near one channel's
working set whatever the channel count; see ``emg_core.channel``): read -> validate -> mask
dropouts -> find and notch mains -> zero-phase band-pass -> RMS envelope -> contractions ->
spectra -> metrics and warnings. Every choice made is written into the result's ``processing``
(ISEK-style reporting), with ``ANALYSIS_VERSION``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import c3d as c3dmod
from .channel import DEFAULT_UNIT, analyse_channel, prepare
from .discovery import discover_emg
from .errors import SignalQualityError
from .filters import design_bandpass
from .metadata import game_metadata, recorded_at, written_mvc
from .metrics import left_right_pairs, symmetry
from .options import AnalysisOptions
from .results import ChannelResult, SessionResult

#: bumped whenever a change can alter a result for the same file and options
ANALYSIS_VERSION = "2.3.0"

#: below this, no baseline, envelope or spectrum means anything
MIN_DURATION_S = 0.5


def analyze(
    source: bytes | str | os.PathLike[str],
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
    selection = discover_emg(rec, opts.include)
    rate = c3dmod.check_rate(rec, opts.lowpass_hz)
    if rec.duration_s < MIN_DURATION_S:
        raise SignalQualityError(
            f"the recording lasts {rec.duration_s * 1000:.0f} ms; at least "
            f"{MIN_DURATION_S * 1000:.0f} ms are needed to tell rest from contraction"
        )
    filt = design_bandpass(rate, opts.highpass_hz, opts.lowpass_hz, opts.filter_order)

    channels: list[ChannelResult] = []
    methods: dict[str, str] = {}
    targets: dict[str, dict[str, Any]] = {}
    in_file = written_mvc(rec)
    for index in selection.indices:
        label = rec.labels[index]
        hint = None
        if index in selection.activated:
            # only "active or not" matters: a byte per sample instead of eight
            hint = rec.channel(selection.activated[index]) > 0  # NaN compares False
        # the raw samples are handed over, not kept here, so the channel can free them early
        unit = rec.units[index]
        # this channel's targets and MVC (file, therapist, given) folded into its own options
        own = opts.for_channel(label, unit.strip() or DEFAULT_UNIT, in_file.get(label))
        result = analyse_channel(label, unit, rec.channel(index), hint, rate, filt, own)
        methods[label] = result.mvc_method
        targets[label] = {
            "mvc_value": own.mvc.get(label),
            "mvc_method": result.mvc_method,
            "mvc_percentage": own.mvc_percentage,
            "duration_threshold_ms": own.duration_threshold_ms,
            "expected_contractions": own.expected_contractions,
        }
        channels.append(result)
    flat = [c.name for c in channels if not c.usable and c.rms == 0.0]
    if len(flat) == len(channels):
        raise SignalQualityError(
            f"every EMG channel is flat (zero variance): {', '.join(repr(s) for s in flat)}; "
            "the sensors recorded nothing"
        )

    live = [c for c in channels if c.usable]
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
            "unusable_channels": [c.name for c in channels if not c.usable],
            "units_inferred": [
                rec.labels[i] for i in selection.indices if not rec.units[i].strip()
            ],
            "unit_when_missing": DEFAULT_UNIT,
        },
        "sampling_rate_hz": rate,
        "artefacts": {
            "stuck": "runs of identical samples >= stuck_min_ms (dropouts, rails) are bridged "
            "by a straight line before filtering and masked with artefact_guard_ms each side",
            "stuck_min_ms": opts.stuck_min_ms,
            "guard_ms": opts.artefact_guard_ms,
            "masked_samples_are_never": "a contraction, an MVC window, a spectrum or a fatigue "
            "window",
        },
        "mains": {
            "detection": "largest line within 47.5-52.5 or 57-63 Hz of a 0.25 Hz Welch PSD, "
            "standing >= 8x above its surroundings, with its harmonics in the pass band",
            "removal": "zero-phase IIR notch, 1 Hz wide, at each standing harmonic, when the "
            "lines carry >= mains_min_fraction of the in-band power",
            "mains_min_fraction": opts.mains_min_fraction,
        },
        "filter": filt.describe(),
        "rectification": "full-wave (squared inside the RMS)",
        "envelope": {"method": "moving RMS, centred", "window_ms": opts.envelope_window_ms},
        "detection": {
            "method": "ratios over a moving rest level, scaled to the channel's own range of "
            "activity; hysteresis; sustained-level test; split at deep valleys; weak efforts "
            "dropped",
            "weak_efforts": "runs whose peak stays below min_peak_fraction of the median peak of "
            "the strongest quarter are not contractions",
            **opts.detection_options(),
        },
        "mvc": {
            "percentage": opts.mvc_percentage,
            "meets_mvc": "best mvc-window mean of the envelope inside the contraction >= threshold",
            "estimate": "best mvc-window mean of the envelope over windows holding no masked "
            "sample: relative to this session's strongest effort",
            "estimate_window_ms": opts.mvc_window_ms,
            "method_per_channel": methods,
            "sources": "the first that exists: written in the C3D file (ANALOG:MVC), given "
            "(the patient's settings, their reference session, or by hand), else the "
            "session's own estimate, relative to this session's strongest effort",
        },
        "targets_per_channel": targets,
        "duration_threshold_ms": opts.duration_threshold_ms,
        "expected_contractions": opts.expected_contractions,
        "spectral": {
            "psd": "Welch, Hann window, 50% overlap, restricted to the pass band, segments "
            "holding a masked sample left out",
            "segment_ms": opts.welch_segment_ms,
            "indices": ["mpf", "mdf (interpolated in bin)", "fi_nsm5 (Dimitrov)"],
            "per_contraction": "mpf and mdf of each contraction's segments; within-contraction "
            "slopes for contractions >= fatigue_min_contraction_ms",
            "slopes": "least squares of per-contraction values over the contractions' mid "
            "times; %/s of the fitted first value; none with fewer than "
            "fatigue_min_contractions",
            "fi_nsm5_relative": "exp of the log-linear trend of per-contraction FI_nsm5 from "
            "the first contraction to the last",
            "fatigue_min_contractions": opts.fatigue_min_contractions,
            "fatigue_min_contraction_ms": opts.fatigue_min_contraction_ms,
        },
        "usability": {
            "max_masked_share": opts.max_masked_share,
            "max_clipped_share": opts.max_clipped_share,
            "too_noisy": "no activity stands out of rest while mains carried >= 20 % of power",
        },
        "symmetry": "1 - |L - R| / (L + R) of compliance rates (time under tension when both 0)",
        "options": opts.to_dict(),
    }
    return SessionResult(
        file=name,
        analysis_version=ANALYSIS_VERSION,
        processing=processing,
        recorded_at=recorded_at(rec, name),
        duration_s=float(rec.duration_s),
        metadata=game_metadata(rec),
        overall_compliance=overall,
        symmetry=sym,
        channels=tuple(channels),
    )


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
    source: bytes | str | os.PathLike[str], *, options: AnalysisOptions | None = None
) -> dict[str, ChannelTrace]:
    """Raw signal, envelope and artefact mask of each EMG channel, as :func:`analyze` has them."""
    opts = options if options is not None else AnalysisOptions()
    rec = c3dmod.read_c3d(source)
    selection = discover_emg(rec, opts.include)
    rate = c3dmod.check_rate(rec, opts.lowpass_hz)
    filt = design_bandpass(rate, opts.highpass_hz, opts.lowpass_hz, opts.filter_order)
    out = {}
    for index in selection.indices:
        raw = np.nan_to_num(rec.channel(index))
        if raw.size == 0 or not np.any(raw != raw[0]):
            zeros = np.zeros(raw.size)
            out[rec.labels[index]] = ChannelTrace(rate, raw, zeros, zeros.astype(bool))
            continue
        prep = prepare(raw, rate, filt, opts)
        # back at the signal's rate, so a plot puts raw and envelope on one time axis
        envelope = np.repeat(prep.envelope, prep.step)[: raw.size]
        out[rec.labels[index]] = ChannelTrace(rate, raw, envelope, prep.masked)
    return out


def _session_symmetry(channels: list[ChannelResult], pairs: list[tuple[int, int]]) -> float | None:
    values = []
    for left, right in pairs:
        a, b = channels[left], channels[right]
        if not (a.usable and b.usable):
            continue  # an untrustworthy side says nothing about balance
        # never None on a usable channel: `or 0.0` only narrows the type
        ca, cb = a.compliance_rate or 0.0, b.compliance_rate or 0.0
        ta, tb = a.time_under_tension_ms or 0.0, b.time_under_tension_ms or 0.0
        if ca or cb:
            values.append(symmetry(ca, cb))
        elif ta or tb:
            values.append(symmetry(ta, tb))
    return float(np.mean(values)) if values else None


__all__ = [
    "ANALYSIS_VERSION",
    "MIN_DURATION_S",
    "AnalysisOptions",
    "ChannelTrace",
    "analyze",
    "channel_traces",
]
