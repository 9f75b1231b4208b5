"""The analysis of one EMG channel: clean, envelope, detect, measure, and say what to trust.

``prepare`` turns raw samples into what detection works on (artefacts bridged and masked, mains
notched, band-passed, RMS envelope); ``analyse_channel`` turns that into a ``ChannelResult`` with
the warnings a therapist needs. Both the analysis and the plots call ``prepare``, so a plot shows
exactly what was analysed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .artefacts import Artefacts, bridge, clipped_fraction, find_stuck, mask_of, mask_of_runs
from .detect import Detection, agreement, detect_contractions
from .errors import SignalQualityError
from .fatigue import (
    ContractionSpectra,
    clean_segments,
    contraction_spectra,
    segments_within,
    session_fatigue,
)
from .filters import BandPass, bandpass, prefix_sum, rms_envelope
from .mains import Mains, find_mains, notch_sos, residual_share, subtract_mains
from .metrics import best_window, rates, signal_quality
from .options import MVC_SOURCE, AnalysisOptions
from .results import ChannelResult, Contraction
from .spectral import segment_spectra

#: a channel's unit when the file names none: C3D analog data are volts unless said otherwise
DEFAULT_UNIT = "V"
#: the envelope is kept at this rate or above (one value per 2 ms)
ENVELOPE_RATE_HZ = 500.0
#: where a first, notched envelope exceeds its median this many times, the hum is not measured
ACTIVE_OVER_MEDIAN = 3.0
#: and this long on each side of it (the bursts' ramps and the first envelope's reach)
HUM_GUARD_S = 0.3
#: below this share of the recording at rest, the rest level is called relative
LITTLE_REST = 0.3
#: hum worth a sentence to the therapist when removed (share of in-band power)
MAINS_WORTH_SAYING = 0.05
#: hum beyond which a channel whose activity does not stand out is called too noisy
MAINS_DOMINANT = 0.2


@dataclass(frozen=True, slots=True)
class Prepared:
    """One channel ready for detection.

    Attributes
    ----------
    emg : ndarray
        Band-passed (and mains-notched) signal.
    envelope : ndarray
        Its RMS envelope at every ``step``-th sample (rate ``envelope_rate``).
    step : int
        Signal samples per envelope sample.
    envelope_rate : float
        The envelope's sampling rate, Hz.
    masked : ndarray of bool
        Artefact samples and their guards, at the signal's rate.
    envelope_masked : ndarray of bool
        The same at the envelope's samples.
    artefacts : Artefacts
        The stuck runs found.
    mains : Mains
        The mains interference found (before removal).
    mains_removed : bool
    mains_residual : float
        Share of the in-band power still on the mains lines after removal (hum that changed
        inside the bursts, where it cannot be measured).
    clipped : float
        Share of saturated samples (dropouts excluded).
    """

    emg: np.ndarray
    envelope: np.ndarray
    step: int
    envelope_rate: float
    masked: np.ndarray
    envelope_masked: np.ndarray
    artefacts: Artefacts
    mains: Mains
    mains_removed: bool
    mains_residual: float
    clipped: float


def prepare(raw: np.ndarray, rate: float, filt: BandPass, opts: AnalysisOptions) -> Prepared:
    """Bridge and mask dropouts, find and notch mains, band-pass, and take the RMS envelope."""
    art = find_stuck(raw, rate, opts.stuck_min_ms / 1000)
    clean = bridge(raw, art) if len(art) else np.asarray(raw, dtype=np.float64)
    clipped = clipped_fraction(clean)
    mains = find_mains(clean, rate, (filt.low_hz, filt.high_hz))
    removed = mains.found and mains.fraction >= opts.mains_min_fraction
    masked = mask_of(art, raw.size, round(opts.artefact_guard_ms / 1000 * rate))
    step = envelope_step(rate)
    if removed:
        # where is the muscle active? A notched first pass says, well enough to keep the hum
        # model off the bursts; the model then removes the hum without the notch's halo
        first = rms_envelope(bandpass(clean, filt, notch_sos(mains, rate)), rate, 0.05, step)
        active = first > ACTIVE_OVER_MEDIAN * np.median(first)
        active = mask_of_runs(np.repeat(active, step)[: raw.size], round(HUM_GUARD_S * rate))
        clean = subtract_mains(clean, rate, mains, active | masked)
    emg = bandpass(clean, filt)
    del clean
    band = (filt.low_hz, filt.high_hz)
    residual = residual_share(emg, rate, band, mains) if removed else 0.0
    envelope = rms_envelope(emg, rate, opts.envelope_window_ms / 1000, step)
    return Prepared(
        emg,
        envelope,
        step,
        rate / step,
        masked,
        masked[::step],
        art,
        mains,
        bool(removed),
        residual,
        clipped,
    )


def envelope_step(rate: float) -> int:
    """Signal samples per envelope sample: the envelope is kept at ``ENVELOPE_RATE_HZ`` or more.

    Contraction edges are then placed to within 1/ENVELOPE_RATE_HZ (2 ms), far inside the
    50 ms envelope window, while detection and the MVC search do a fraction of the work on a
    2 kHz recording.
    """
    return max(1, int(rate // ENVELOPE_RATE_HZ))


def _none(value: float | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def analyse_channel(
    label: str,
    unit: str,
    raw: np.ndarray,
    hint: np.ndarray | None,
    rate: float,
    filt: BandPass,
    opts: AnalysisOptions,
) -> ChannelResult:
    """Analyse one raw EMG channel into its ``ChannelResult``.

    Parameters
    ----------
    label, unit : str
        The channel's label and unit as the file gives them (a blank unit means volts).
    raw : ndarray, shape (n_samples,)
        Raw samples.
    hint : ndarray of bool, optional
        The game's activated channel, for the agreement score.
    rate : float
        Sampling rate, Hz.
    filt : BandPass
    opts : AnalysisOptions
    """
    n = raw.size
    bad = np.count_nonzero(~np.isfinite(raw))
    if bad:
        raise SignalQualityError(
            f"EMG channel {label!r} holds {bad} non-finite samples (NaN or infinity): "
            "the recording is damaged"
        )
    unit = unit.strip() or DEFAULT_UNIT
    given = opts.mvc.get(label)
    if n == 0 or not np.any(raw != raw[0]):
        return _unusable(label, unit, rate, given, opts, "flat: the sensor recorded nothing")

    prep = prepare(raw, rate, filt, opts)
    del raw
    env_rate = prep.envelope_rate
    det = detect_contractions(
        prep.envelope, env_rate, valid=~prep.envelope_masked, **opts.detection_kwargs()
    )
    # contraction bounds at the signal's rate, for spectra and times
    starts = det.starts * prep.step
    ends = np.minimum(det.ends * prep.step, n)
    masked_n = int(np.count_nonzero(prep.masked))
    warnings: list[str] = []
    if prep.mains_removed and prep.mains.fraction >= MAINS_WORTH_SAYING:
        warnings.append(
            f"mains hum at {prep.mains.fundamental_hz:.1f} Hz "
            f"({100 * prep.mains.fraction:.0f} % of the signal's power) removed"
        )
    if len(prep.artefacts):
        stuck_s = prep.artefacts.n_samples / rate
        warnings.append(
            f"{stuck_s:.1f} s of sensor dropout masked ({len(prep.artefacts)} "
            f"stretch{'es' if len(prep.artefacts) > 1 else ''} stuck at one value)"
        )
    if MAINS_WORTH_SAYING <= prep.mains_residual < MAINS_DOMINANT:
        warnings.append(
            f"some hum remains inside the contractions ({100 * prep.mains_residual:.0f} % of the "
            "power): amplitudes and MVC may read high"
        )
    if prep.clipped >= 0.001:
        warnings.append(
            f"{100 * prep.clipped:.1f} % of samples at the amplifier's limit (saturated)"
        )

    reason = None
    if masked_n > opts.max_masked_share * n:
        reason = f"mostly dropout: {100 * masked_n / n:.0f} % of the recording is masked"
    elif prep.clipped > opts.max_clipped_share:
        reason = f"saturated: {100 * prep.clipped:.0f} % of samples at the amplifier's limit"
    elif prep.mains_residual >= MAINS_DOMINANT:
        reason = (
            "too noisy to count contractions: the mains hum changes during the contractions and "
            f"{100 * prep.mains_residual:.0f} % of the power is still hum after removing it"
        )
    elif not det.enough_contrast and prep.mains.fraction >= MAINS_DOMINANT:
        reason = (
            "too noisy to count contractions: with the mains hum removed, no muscle activity "
            "stands out of the noise"
        )
    if reason is not None:
        return _unusable(
            label, unit, rate, given, opts, reason, warnings=warnings, prep=prep, det=det
        )
    if det.weak_efforts:
        warnings.append(
            f"{det.weak_efforts} weak effort{'s' if det.weak_efforts > 1 else ''} below "
            f"{100 * opts.min_peak_fraction:.0f} % of this channel's typical contraction "
            "not counted"
        )
    if not det.enough_contrast:
        warnings.append("no contraction stands out of the rest level")
    elif det.rest_share < LITTLE_REST:
        warnings.append(
            f"little rest in this recording ({100 * det.rest_share:.0f} % of it): levels are "
            "relative to its quietest moments"
        )

    mvc, mvc_window = _mvc(prep, given, opts)
    threshold = mvc * opts.mvc_percentage / 100
    segment_s = opts.welch_segment_ms / 1000
    spectra = segment_spectra(
        prep.emg,
        rate,
        (filt.low_hz, filt.high_hz),
        segment_s=segment_s,
        only=segments_within(starts, ends, n, rate, segment_s),
    )
    cs = contraction_spectra(
        spectra,
        clean_segments(spectra, prep.masked),
        starts,
        ends,
        round(opts.fatigue_min_contraction_ms / 1000 * rate),
    )
    contractions = _contractions(det, starts, ends, prep, cs, rate, threshold, opts)
    total = len(contractions)
    good = sum(c.is_good for c in contractions)
    mvc_ok = sum(c.meets_mvc for c in contractions)
    dur_ok = sum(c.meets_duration for c in contractions)
    fatigue = session_fatigue(cs, spectra.freqs, starts, ends, rate, opts.fatigue_min_contractions)

    quality = signal_quality(
        det.contrast,
        prep.mains.fraction if not prep.mains_removed else 0.0,
        prep.clipped,
        masked_n / n,
    )
    agree = (
        agreement(
            starts,
            ends,
            hint,
            rate,
            merge_gap_s=opts.merge_gap_ms / 1000,
            min_duration_s=opts.min_contraction_ms / 1000,
        )
        if hint is not None
        else None
    )
    unmasked = ~prep.masked
    emg_ok = prep.emg[unmasked] if masked_n else prep.emg
    if mvc_window is not None:
        source = (
            f"relative to this session: estimated from its strongest {opts.mvc_window_ms:.0f} ms "
            f"({mvc_window[0] / env_rate:.2f}-{mvc_window[1] / env_rate:.2f} s)"
        )
    elif given is not None:
        source = MVC_SOURCE[opts.mvc_method(label)]
    else:  # every window of the session touches an artefact: nothing to estimate it from
        source = "not estimated: no stretch of this session is free of artefacts"
    return ChannelResult(
        **_described(label, unit, rate, opts, tuple(warnings), prep, det),
        mvc_value=float(mvc),
        mvc_threshold=float(threshold),
        contractions_total=total,
        contractions_good=good,
        contractions_mvc_compliant=mvc_ok,
        contractions_duration_compliant=dur_ok,
        **rates(total, good, mvc_ok, dur_ok, opts.expected_contractions),
        time_under_tension_ms=float(sum(c.duration_ms for c in contractions)),
        rms=float(np.sqrt(emg_ok @ emg_ok / emg_ok.size)) if emg_ok.size else 0.0,
        mav=float(np.mean(np.abs(emg_ok))) if emg_ok.size else 0.0,
        **fatigue,
        signal_quality=quality,
        activation_agreement=agree,
        usable=True,
        mvc_source=source,
        mvc_start_ms=1000 * mvc_window[0] / env_rate if mvc_window is not None else None,
        mvc_end_ms=1000 * mvc_window[1] / env_rate if mvc_window is not None else None,
        contractions=tuple(contractions),
    )


def _mvc(
    prep: Prepared, given: float | None, opts: AnalysisOptions
) -> tuple[float, tuple[int, int] | None]:
    """The MVC and, when estimated, its window ``(start, end)`` in envelope samples (never
    touching a masked one)."""
    if given is not None:
        return float(given), None
    rate = prep.envelope_rate
    value, start = best_window(
        prep.envelope, rate, opts.mvc_window_ms / 1000, ~prep.envelope_masked
    )
    if start is None:
        return 0.0, None
    return value, (start, start + max(1, round(opts.mvc_window_ms / 1000 * rate)))


def _contractions(
    det: Detection,
    starts: np.ndarray,
    ends: np.ndarray,
    prep: Prepared,
    cs: ContractionSpectra,
    rate: float,
    threshold: float,
    opts: AnalysisOptions,
) -> list[Contraction]:
    """The contractions: times from ``starts``/``ends`` (signal samples), amplitudes from the
    envelope (``det``'s envelope samples), spectral values from ``cs``."""
    if len(det) == 0:
        return []
    envelope = prep.envelope
    e_starts, e_ends = det.starts, det.ends
    csum = prefix_sum(envelope)
    means = (csum[e_ends] - csum[e_starts]) / (e_ends - e_starts)
    peaks = np.maximum.reduceat(np.append(envelope, 0.0), np.ravel([e_starts, e_ends], "F"))[::2]
    # "reaches X % MVC" is judged on the contraction's best window of the same length as the
    # MVC estimate: the raw peak of a 50 ms RMS rides ~15 % noise and would pass weak efforts
    w = max(1, round(opts.mvc_window_ms / 1000 * prep.envelope_rate))
    out = []
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        start_ms, end_ms = 1000 * s / rate, 1000 * e / rate
        duration = end_ms - start_ms
        es, ee = int(e_starts[i]), int(e_ends[i])
        if ee - es > w:
            sustained = float(np.max(csum[es + w : ee + 1] - csum[es : ee + 1 - w]) / w)
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
                mpf_hz=_none(cs.mpf[i]),
                mdf_hz=_none(cs.mdf[i]),
                mpf_slope_hz_per_s=_none(cs.mpf_slope[i]),
                mdf_slope_hz_per_s=_none(cs.mdf_slope[i]),
            )
        )
    return out


def _unusable(
    label: str,
    unit: str,
    rate: float,
    given: float | None,
    opts: AnalysisOptions,
    reason: str,
    *,
    warnings: list[str] | None = None,
    prep: Prepared | None = None,
    det: Detection | None = None,
) -> ChannelResult:
    """A channel that cannot be trusted: no counts, and the reason first among its warnings."""
    said = (f"not analysed: {reason}", *(warnings or ()))
    return ChannelResult(
        **_described(label, unit, rate, opts, said, prep, det),
        mvc_value=float(given) if given is not None else None,
        mvc_threshold=float(given * opts.mvc_percentage / 100) if given is not None else None,
        contractions_total=None,
        contractions_good=None,
        contractions_mvc_compliant=None,
        contractions_duration_compliant=None,
        completion_rate=None,
        intensity_rate=None,
        duration_rate=None,
        compliance_rate=None,
        time_under_tension_ms=None,
        rms=0.0 if prep is None else float(np.sqrt(np.mean(np.square(prep.emg)))),
        mav=0.0 if prep is None else float(np.mean(np.abs(prep.emg))),
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
        usable=False,
        mvc_source=MVC_SOURCE[opts.mvc_method(label)] if given is not None else None,
        fatigue_reason=f"channel not analysed ({reason.split(':')[0]})",
        contractions=(),
    )


def _described(
    label: str,
    unit: str,
    rate: float,
    opts: AnalysisOptions,
    warnings: tuple[str, ...],
    prep: Prepared | None,
    det: Detection | None,
) -> dict[str, Any]:
    """The fields a channel's result has whether or not it could be analysed: what it is, the
    targets it was judged against, and what was found in it (artefacts, hum, rest)."""
    masked_n = int(np.count_nonzero(prep.masked)) if prep is not None else 0
    return {
        "name": label,
        "sampling_rate": rate,
        "unit": unit,
        "mvc_method": opts.mvc_method(label),
        "duration_threshold_ms": float(opts.duration_threshold_ms),
        "expected_contractions": int(opts.expected_contractions),
        "warnings": warnings,
        "masked_samples": masked_n,
        "masked_s": masked_n / rate,
        "mains_hz": _none(prep.mains.fundamental_hz) if prep is not None else None,
        "mains_fraction": float(prep.mains.fraction) if prep is not None else 0.0,
        "mains_removed": bool(prep.mains_removed) if prep is not None else False,
        "rest_level": float(det.rest_level) if det is not None else None,
        "onset_level": float(det.onset_level) if det is not None else None,
        "offset_level": float(det.offset_level) if det is not None else None,
    }


__all__ = ["DEFAULT_UNIT", "Prepared", "analyse_channel", "prepare"]
