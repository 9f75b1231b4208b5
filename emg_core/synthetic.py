"""Synthetic GHOSTLY recordings with known ground truth, written as real C3D files.

The generator draws, per channel, contractions at known times and amplitudes (raised-cosine
ramps into and out of a plateau of band-limited Gaussian "EMG"), on top of white baseline noise,
50 Hz mains hum and a slow baseline drift, then computes the game's ``CHn activated`` channel the
way the game does (causal band-pass 5-25 Hz, rectification, 100 ms moving average, zero below a
rest threshold of mean + 3 SD over the first 2 s). The file is written with ``ezc3d`` in the
game's layout (``CH1 Raw``, ``CH2 Raw``, ``CH1 activated``, ``CH2 activated``, volts, ``INFO``
and ``SUBJECTS`` groups), so tests exercise the same reader real uploads go through.

:func:`realistic_signals` / :func:`realistic_recording` add what real GHOSTLY sessions show and
the clean model lacks: a rest level that drifts, steps and flickers; brief rest blips that are
not contractions; clusters of short bursts and a few long holds; rail dropouts (samples stuck at
-5.5 mV) with a baseline step after them; mains hum at 49.5 Hz with harmonics, from negligible
to dominating; optional clipping. Their :class:`RealisticTruth` says exactly where each is.

Everything is a pure function of its arguments (``seed`` included): the same call gives the
same bytes' samples and the same :class:`GroundTruth` / :class:`RealisticTruth`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from scipy import signal

from .filters import NYQUIST_MARGIN, bandpass, design_bandpass, rms_envelope
from .results import GameMetadata

#: the game's rest threshold: mean + 3 SD of its smoothed signal over the first 2 s
GAME_REST_S = 2.0
GAME_THRESHOLD_SD = 3.0


@dataclass(frozen=True, slots=True)
class Burst:
    """One burst of muscle activity: a true contraction, or a weak effort where the truth says so.

    Attributes
    ----------
    channel : str
        Raw channel label, e.g. ``"CH1 Raw"``.
    index : int
        0-based order of the burst on its channel.
    start_s, end_s : float
        Where the amplitude leaves zero (start of the ramp up) and returns to it (end of the
        ramp down), in seconds from the first sample.
    amplitude : float
        RMS of the EMG on the plateau, in volts.
    ramp_s : float
        Duration of each raised-cosine ramp, in seconds.
    """

    channel: str
    index: int
    start_s: float
    end_s: float
    amplitude: float
    ramp_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What the generator put into a recording.

    Attributes
    ----------
    rate : float
        Analog sampling rate, Hz.
    duration_s : float
        Recording length, s (``n_samples / rate``).
    n_samples : int
        Samples per channel.
    channels : tuple of str
        Raw EMG labels (``CH1 Raw``, ...); the activated labels are ``CHn activated``.
    bursts : tuple of Burst
        Every contraction of every channel, ordered by channel then time.
    mvc : dict of str to float
        Per raw channel, the plateau RMS (volts) that stands for 100 % MVC.
    noise_rms : float
        RMS of the white baseline noise, volts.
    snr_db : float
        ``20 log10(mvc / noise_rms)``.
    hum_v, drift_v : float
        Amplitudes of the 50 Hz hum and of the slow drift, volts.
    metadata : GameMetadata
        What was written into ``INFO`` / ``SUBJECTS``.
    recorded_at : datetime
        ``INFO:TIME`` (minute resolution, labelled UTC).
    file_name : str
        A GHOSTLY-style file name for this recording.
    seed : int
    """

    rate: float
    duration_s: float
    n_samples: int
    channels: tuple[str, ...]
    bursts: tuple[Burst, ...]
    mvc: dict[str, float]
    noise_rms: float
    snr_db: float
    hum_v: float
    drift_v: float
    metadata: GameMetadata
    recorded_at: datetime
    file_name: str
    seed: int
    activated: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)

    def bursts_for(self, channel: str) -> tuple[Burst, ...]:
        """The true bursts of one raw channel, in time order."""
        return tuple(b for b in self.bursts if b.channel == channel)


def ghostly_signals(
    *,
    seed: int = 0,
    duration_s: float = 60.0,
    rate: float = 990.0,
    n_channels: int = 2,
    contractions: int = 12,
    burst_s: tuple[float, float] = (1.0, 4.0),
    gap_s: tuple[float, float] = (1.5, 4.0),
    ramp_s: tuple[float, float] = (0.05, 0.25),
    amplitude_mvc: tuple[float, float] = (0.5, 1.0),
    amplitudes_mvc: tuple[float, ...] | None = None,
    mvc_v: float = 1.5e-3,
    snr_db: float = 30.0,
    hum_ratio: float = 0.5,
    drift_ratio: float = 5.0,
    lead_s: float = 3.0,
) -> tuple[tuple[str, ...], np.ndarray, GroundTruth]:
    """Generate the four GHOSTLY channels as arrays (no file).

    Parameters
    ----------
    seed : int
        Seed of every random draw.
    duration_s : float
        Recording length in seconds.
    rate : float
        Sampling rate in Hz (the game uses 990).
    n_channels : int
        Number of raw EMG channels (each gets an ``activated`` partner).
    contractions : int
        Contractions per channel; fewer are placed when ``duration_s`` cannot hold them.
    burst_s : (float, float)
        Range of contraction durations (ramps included), seconds.
    gap_s : (float, float)
        Range of rest between contractions, seconds.
    ramp_s : (float, float)
        Range of ramp durations, seconds (clipped to a third of the burst).
    amplitude_mvc : (float, float)
        Range of plateau amplitudes as a fraction of MVC.
    amplitudes_mvc : tuple of float, optional
        Exact plateau fractions of MVC, cycled over the contractions (overrides the range).
    mvc_v : float
        Plateau RMS at 100 % MVC, volts (Delsys Trigno raw peaks are 1-3 mV).
    snr_db : float
        ``20 log10(mvc_v / baseline noise RMS)``.
    hum_ratio, drift_ratio : float
        50 Hz hum and slow-drift amplitudes relative to the baseline noise RMS.
    lead_s : float
        Rest before the first contraction (the game calibrates on the first 2 s).

    Returns
    -------
    labels : tuple of str
        ``("CH1 Raw", ..., "CH1 activated", ...)``.
    data : ndarray, shape (2 * n_channels, n_samples), float64
        Samples in volts.
    truth : GroundTruth
    """
    rng = np.random.default_rng(seed)
    n = _n_samples(duration_s, rate)
    t = np.arange(n) / rate
    noise_rms = mvc_v / 10 ** (snr_db / 20)
    raw_labels, activated_labels = _labels(n_channels)
    data = np.empty((2 * n_channels, n), dtype=np.float64)
    bursts: list[Burst] = []
    activated: dict[str, tuple[tuple[float, float], ...]] = {}
    for c, label in enumerate(raw_labels):
        envelope = np.zeros(n)
        k = 0
        start = lead_s + rng.uniform(0.0, 1.0)
        while k < contractions:
            length = rng.uniform(*burst_s)
            if start + length > duration_s - 1.0:
                break
            ramp = min(rng.uniform(*ramp_s), length / 3)
            if amplitudes_mvc:
                frac = amplitudes_mvc[k % len(amplitudes_mvc)]
            else:
                frac = rng.uniform(*amplitude_mvc)
            amp = frac * mvc_v
            _add_burst(envelope, t, start, start + length, ramp, amp)
            bursts.append(Burst(label, k, start, start + length, amp, ramp))
            k += 1
            start += length + rng.uniform(*gap_s)
        raw = envelope * _emg_carrier(rng, n, rate) + noise_rms * rng.standard_normal(n)
        hum = hum_ratio * noise_rms * math.sqrt(2)
        raw += hum * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 6))
        drift_f = rng.uniform(0.05, 0.3)
        raw += drift_ratio * noise_rms * np.sin(2 * np.pi * drift_f * t + rng.uniform(0, 6))
        activated[label] = _put_channel(data, c, raw, rate)
    labels = raw_labels + activated_labels
    meta, when, file_name = _session(rng, seed, n / rate)
    truth = GroundTruth(
        rate=float(rate),
        duration_s=n / rate,
        n_samples=n,
        channels=raw_labels,
        bursts=tuple(bursts),
        mvc={label: mvc_v for label in raw_labels},
        noise_rms=noise_rms,
        snr_db=snr_db,
        hum_v=hum_ratio * noise_rms,
        drift_v=drift_ratio * noise_rms,
        metadata=meta,
        recorded_at=when,
        file_name=file_name,
        seed=seed,
        activated=activated,
    )
    return labels, data, truth


def _n_samples(duration_s: float, rate: float) -> int:
    n = round(duration_s * rate)
    return n - n % _samples_per_frame(n)  # so the C3D file holds exactly these samples


def _labels(n_channels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    raw = tuple(f"CH{c + 1} Raw" for c in range(n_channels))
    return raw, tuple(f"CH{c + 1} activated" for c in range(n_channels))


def _emg_carrier(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    # EMG spectrum: white noise through a 2nd-order 30-250 Hz band-pass (MPF near 110 Hz)
    return _band_noise(rng, n, rate, 30.0, 250.0)


def _band_noise(
    rng: np.random.Generator, n: int, rate: float, low_hz: float, high_hz: float
) -> np.ndarray:
    """Unit-RMS Gaussian noise through a causal 2nd-order Butterworth band-pass."""
    band = [low_hz, min(high_hz, 0.45 * rate)]
    sos = signal.butter(2, band, btype="band", fs=rate, output="sos")
    out = signal.sosfilt(sos, rng.standard_normal(n))
    return np.asarray(out / np.sqrt(np.mean(out**2)))


def _session(
    rng: np.random.Generator, seed: int, duration_s: float
) -> tuple[GameMetadata, datetime, str]:
    """The game's INFO / SUBJECTS fields, the recording time and a GHOSTLY-style file name."""
    when = datetime(2023, 3, 21, 17, 50, tzinfo=UTC)
    meta = GameMetadata(
        game_name="Ghostly",
        game_level=int(rng.integers(1, 6)),
        game_duration=round(duration_s, 3),
        therapist_id=f"T{seed % 1000:03d}",
        player_name=f"P{seed % 10000:04d}",
        game_score=float(rng.integers(0, 1000)),
    )
    name = f"Ghostly_Emg_{when:%Y%m%d_%H-%M}-{seed % 60:02d}-{seed % 10000:04d}.c3d"
    return meta, when, name


def _add_burst(
    envelope: np.ndarray, t: np.ndarray, start: float, end: float, ramp: float, amp: float
) -> None:
    i0, i1 = np.searchsorted(t, [start, end])
    seg = t[i0:i1]
    rise = np.clip((seg - start) / ramp, 0.0, 1.0)
    fall = np.clip((end - seg) / ramp, 0.0, 1.0)
    # raised cosine: smooth like a real recruitment ramp, exactly zero outside [start, end]
    shape = 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))
    envelope[i0:i1] = np.maximum(envelope[i0:i1], amp * shape)


def game_activated(raw: np.ndarray, rate: float) -> np.ndarray:
    """The game's ``activated`` channel for one raw channel.

    Causal 2nd-order Butterworth band-pass 5-25 Hz, full-wave rectification, causal 100 ms
    moving average, then zero wherever the result is below the rest mean + 3 SD of its first
    2 s (the game's automatic threshold).

    Parameters
    ----------
    raw : ndarray, shape (n_samples,)
        Raw EMG in volts.
    rate : float
        Sampling rate in Hz.

    Returns
    -------
    ndarray, shape (n_samples,)
        The smoothed signal where it exceeds the threshold, exactly 0 elsewhere.
    """
    sos = signal.butter(2, [5.0, 25.0], btype="band", fs=rate, output="sos")
    rect = np.abs(signal.sosfilt(sos, raw))
    width = max(1, round(0.1 * rate))
    csum = np.cumsum(rect)
    smooth = csum.copy()
    smooth[width:] -= csum[:-width]
    smooth /= width
    rest = smooth[: max(width + 1, int(GAME_REST_S * rate))][width:]
    threshold = rest.mean() + GAME_THRESHOLD_SD * rest.std() if rest.size else 0.0
    return np.where(smooth > threshold, smooth, 0.0)


def _put_channel(
    data: np.ndarray, c: int, raw: np.ndarray, rate: float
) -> tuple[tuple[float, float], ...]:
    """Write raw channel ``c`` and its game ``activated`` partner (``c`` rows further down) into
    ``data``; return the partner's active segments, in seconds."""
    n_channels = len(data) // 2
    data[c] = raw
    data[n_channels + c] = game_activated(raw, rate)
    return _segments(data[n_channels + c] > 0, rate)


def _segments(mask: np.ndarray, rate: float) -> tuple[tuple[float, float], ...]:
    edges = np.diff(mask.astype(np.int8), prepend=0, append=0)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return tuple((float(s / rate), float(e / rate)) for s, e in zip(starts, ends, strict=True))


def c3d_bytes(
    labels: tuple[str, ...],
    data: np.ndarray,
    rate: float,
    *,
    units: str | tuple[str, ...] = "V",
    metadata: GameMetadata | None = None,
    recorded_at: datetime | None = None,
    mvc: dict[str, float] | None = None,
) -> bytes:
    """Write analog channels as a C3D file with ``ezc3d`` and return its bytes.

    The point rate is the analog rate divided by a whole number chosen so the frame count stays
    within the 16-bit header fields every reader understands.

    Parameters
    ----------
    labels : tuple of str
        One label per row of ``data``.
    data : ndarray, shape (n_channels, n_samples)
        Samples in ``units``.
    rate : float
        Analog rate, Hz.
    units : str or tuple of str
        Unit of every channel, or one per channel.
    metadata : GameMetadata, optional
        Written to ``INFO`` (GAME_NAME, GAME_LEVEL, DURATION, THERAPIST_ID) and ``SUBJECTS``
        (PLAYER_NAME, GAME_SCORE).
    recorded_at : datetime, optional
        Written to ``INFO:TIME`` as year, month, day, hour, minute.
    mvc : dict of str to float, optional
        An MVC per channel label, written to ``ANALOG:MVC`` (0 for channels without one), as a
        game that knows the patient's MVC would.

    Returns
    -------
    bytes
    """
    import ezc3d  # only the generator needs ezc3d; the reader is our own

    n = data.shape[1]
    per_frame = _samples_per_frame(n)
    n -= n % per_frame
    c = ezc3d.c3d()
    c["parameters"]["POINT"]["RATE"]["value"] = [rate / per_frame]
    c["parameters"]["POINT"]["LABELS"]["value"] = []
    c["parameters"]["ANALOG"]["RATE"]["value"] = [rate]
    c["parameters"]["ANALOG"]["LABELS"]["value"] = list(labels)
    unit_list = [units] * len(labels) if isinstance(units, str) else list(units)
    c["parameters"]["ANALOG"]["UNITS"]["value"] = unit_list
    c["data"]["points"] = np.zeros((4, 0, n // per_frame))
    c["data"]["analogs"] = np.ascontiguousarray(data[None, :, :n])
    if metadata is not None:
        for group, name, value in (
            ("INFO", "GAME_NAME", metadata.game_name),
            ("INFO", "GAME_LEVEL", metadata.game_level),
            ("INFO", "DURATION", metadata.game_duration),
            ("INFO", "THERAPIST_ID", metadata.therapist_id),
            ("SUBJECTS", "PLAYER_NAME", metadata.player_name),
            ("SUBJECTS", "GAME_SCORE", metadata.game_score),
        ):
            if value is not None:
                c.add_parameter(group, name, [value])
    if recorded_at is not None:
        c.add_parameter(
            "INFO",
            "TIME",
            [getattr(recorded_at, part) for part in ("year", "month", "day", "hour", "minute")],
        )
    if mvc:
        c.add_parameter("ANALOG", "MVC", [float(mvc.get(label, 0.0)) for label in labels])
    with tempfile.TemporaryDirectory(prefix="emg-synth-") as tmp:
        path = os.path.join(tmp, "recording.c3d")
        c.write(path)
        return Path(path).read_bytes()


#: the ground truth of either generator
_Truth = TypeVar("_Truth", "GroundTruth", "RealisticTruth")


def _as_c3d(
    signals: tuple[tuple[str, ...], np.ndarray, _Truth], rate: float
) -> tuple[bytes, _Truth]:
    """The C3D bytes of a generator's ``(labels, data, truth)``, with the truth's session fields."""
    labels, data, truth = signals
    content = c3d_bytes(labels, data, rate, metadata=truth.metadata, recorded_at=truth.recorded_at)
    return content, truth


def _samples_per_frame(n: int) -> int:
    return next(k for k in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if n / k <= 65535)


def ghostly_recording(
    *, seed: int = 0, duration_s: float = 60.0, rate: float = 990.0, **kwargs: Any
) -> tuple[bytes, GroundTruth]:
    """A complete synthetic GHOSTLY recording as C3D bytes, with its ground truth.

    Parameters
    ----------
    seed, duration_s, rate, **kwargs
        As for :func:`ghostly_signals`.

    Returns
    -------
    content : bytes
        The C3D file.
    truth : GroundTruth
    """
    return _as_c3d(ghostly_signals(seed=seed, duration_s=duration_s, rate=rate, **kwargs), rate)


def write_ghostly(path: str | os.PathLike[str], **kwargs: Any) -> GroundTruth:
    """Write :func:`ghostly_recording` to ``path`` and return the ground truth."""
    content, truth = ghostly_recording(**kwargs)
    Path(path).write_bytes(content)
    return truth


# --------------------------------------------------------------------------------------------
# realistic recordings: what real GHOSTLY sessions show beyond the clean model above

#: RMS window (s) of the envelope on which blip heights are defined (the analysis' default)
ENVELOPE_S = 0.05
#: margin (s) kept free of bursts at the end of a realistic recording
_TAIL_S = 1.0


@dataclass(frozen=True, slots=True)
class RealisticSpec:
    """What one channel of :func:`realistic_signals` holds; the defaults mimic real sessions.

    Ranges are ``(low, high)`` drawn uniformly unless said otherwise. Levels are RMS values in
    volts; "x rest" is relative to the channel's ``rest_v`` draw. Each phenomenon switches off
    with a zero (count, rate, sigma, share or ratio) or ``None``.

    Attributes
    ----------
    rest_v : (float, float)
        Range of the channel's rest level (the median of its drifting noise floor), volts,
        drawn log-uniformly.
    drift_sigma : float
        SD of the natural log of the slow multiplicative drift of the rest level.
    drift_s : float
        Width (s) of the Gaussian kernel that smooths that drift.
    rest_steps : int
        Abrupt steps of the rest level, at uniform times in the middle 80 % of the recording.
    rest_step_factor : (float, float)
        Range of each step's factor; half the draws are inverted (steps down and up).
    flicker_sigma : float
        SD of the natural log of the fast modulation of the rest noise (non-stationary
        noise), normalised to unit mean square so the rest RMS stays the rest level.
    flicker_s : float
        Kernel width (s) of that modulation.
    cluster_size : (int, int)
        Inclusive range of the number of bursts in a cluster.
    intra_gap_s : (float, float)
        Rest between the bursts of one cluster, s.
    inter_gap_s : (float, float)
        Rest between clusters, s.
    burst_s : (float, float)
        Burst duration (ramps included), s, drawn log-uniformly.
    hold_share : float
        Probability that a burst is a long hold drawn from ``hold_s`` instead.
    hold_s : (float, float)
        Long-hold duration, s.
    ramp_s : (float, float)
        Raised-cosine ramp at each end, s (at most a third of the burst).
    contrast : (float, float)
        Plateau RMS as x rest, drawn log-uniformly per burst (e.g. ``(3, 4)`` for a weak
        channel). Measured on the envelope (plateau median over the median at rest) it comes
        out near 0.7 x the draw: the tremor lowers the plateau's median, steps of the rest level
        raise the rest's. The default spread (2.4x) is that of the contractions the game counts
        in real sessions: relative to the median of a channel's strongest quarter, their peaks
        lie at 0.43 (5th percentile), 0.60 (25th) and 0.77 (median).
    tremor_sigma : float
        SD of the natural log of the amplitude modulation within a burst; each burst's
        modulation is scaled so its plateau RMS stays the burst's amplitude.
    tremor_s : float
        Kernel width (s) of that modulation.
    effort_rate : float
        Weak efforts per second of eligible rest (Poisson count): bursts like the others but at
        ``effort_fraction`` of the channel's strongest burst, at least ``effort_clearance_s``
        from any burst. Real sessions hold such stirrings well above rest (0 to 13 per
        channel, 4 on average); the game counts none of them, and neither should we.
    effort_fraction : (float, float)
        Plateau RMS of a weak effort as a fraction of the strongest burst's, drawn
        log-uniformly (real ones peak at 0.11-0.27 of the strong contractions, a few higher).
    effort_clearance_s : float
        Least rest between a weak effort and a burst.
    blip_rate : float
        Rest blips per second of eligible rest (Poisson count).
    blip_height : (float, float)
        Peak of the 50 ms RMS envelope over a blip, as x the local rest level (>= 1), drawn
        log-uniformly.
    blip_width_s : (float, float)
        Width of a blip (a Hann-windowed burst of EMG-band noise), s.
    dropouts : int
        Rail dropouts (fewer when the rest cannot hold them).
    dropout_s : (float, float)
        Dropout length, s.
    rail_v : float
        The value a dropout is stuck at, volts; rounded to float32 so the file holds it exactly.
    dropout_step_v : float
        The baseline (DC) steps by a uniform draw in ``[-dropout_step_v, dropout_step_v]``
        after each dropout, volts.
    dropout_over_burst : bool
        Put the first dropout inside a burst's plateau instead of in rest.
    clearance_s : float
        Least rest between a burst and a blip or a dropout, and between blips and dropouts.
    hum_hz : float
        Mains fundamental, Hz (49.5: 50 Hz seen through the game's ~1 % fast clock).
    hum_x_rest : float
        Hum RMS (all lines together) as x rest.
    hum_fraction : float, optional
        If given, replaces ``hum_x_rest``: the hum's share of the channel's 20-450 Hz power
        (before clipping and dropouts), in ``[0, 1)``.
    hum_harmonics : int
        Number of lines: the fundamental and its harmonics below 0.98 x Nyquist.
    hum_decay : float
        Amplitude of each line relative to the one below it.
    hum_wander_sigma : float
        SD of the natural log of the slow wander of the hum amplitude (unit mean square).
    hum_wander_s : float
        Kernel width (s) of that wander.
    clip_v : float, optional
        Clip the raw signal to ``[-clip_v, clip_v]`` (before dropouts).
    dc_v : (float, float)
        Range of the channel's DC offset, volts.
    lead_s : float
        Rest before the first burst (the game calibrates on the first 2 s); no dropout there.
    """

    rest_v: tuple[float, float] = (2.5e-6, 7e-6)
    drift_sigma: float = 0.3
    drift_s: float = 10.0
    rest_steps: int = 1
    rest_step_factor: tuple[float, float] = (0.6, 0.8)
    flicker_sigma: float = 0.55
    flicker_s: float = 0.1
    cluster_size: tuple[int, int] = (1, 5)
    intra_gap_s: tuple[float, float] = (0.5, 1.5)
    inter_gap_s: tuple[float, float] = (2.5, 8.0)
    burst_s: tuple[float, float] = (0.3, 1.5)
    hold_share: float = 0.05
    hold_s: tuple[float, float] = (2.0, 5.0)
    ramp_s: tuple[float, float] = (0.05, 0.2)
    contrast: tuple[float, float] = (45.0, 110.0)
    tremor_sigma: float = 0.2
    tremor_s: float = 0.08
    effort_rate: float = 0.15
    effort_fraction: tuple[float, float] = (0.1, 0.24)
    effort_clearance_s: float = 1.0
    blip_rate: float = 0.4
    blip_height: tuple[float, float] = (5.0, 20.0)
    blip_width_s: tuple[float, float] = (0.02, 0.15)
    dropouts: int = 2
    dropout_s: tuple[float, float] = (0.2, 0.35)
    rail_v: float = -0.0055
    dropout_step_v: float = 5e-6
    dropout_over_burst: bool = False
    clearance_s: float = 0.3
    hum_hz: float = 49.5
    hum_x_rest: float = 1.0
    hum_fraction: float | None = None
    hum_harmonics: int = 3
    hum_decay: float = 0.25
    hum_wander_sigma: float = 0.3
    hum_wander_s: float = 10.0
    clip_v: float | None = None
    dc_v: tuple[float, float] = (-20e-6, 0.0)
    lead_s: float = 3.0

    def __post_init__(self) -> None:
        for name in (
            "rest_v", "rest_step_factor", "cluster_size", "intra_gap_s", "inter_gap_s",
            "burst_s", "hold_s", "ramp_s", "contrast", "effort_fraction", "blip_height",
            "blip_width_s", "dropout_s", "dc_v",
        ):  # fmt: skip
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name} must be a (low, high) range, got {(low, high)}")
        positive = (
            "rest_v", "burst_s", "hold_s", "contrast", "effort_fraction", "blip_width_s",
            "dropout_s",
        )  # fmt: skip
        if any(getattr(self, name)[0] <= 0 for name in positive):
            raise ValueError(f"the ranges {', '.join(positive)} must be positive")
        if self.cluster_size[0] < 1 or self.blip_height[0] < 1 or self.rest_step_factor[0] <= 0:
            raise ValueError(
                "cluster_size, blip_height and rest_step_factor start at >= 1, >= 1, > 0"
            )
        if self.hum_fraction is not None and not 0 <= self.hum_fraction < 1:
            raise ValueError(f"hum_fraction must be in [0, 1), got {self.hum_fraction}")
        if not 0 <= self.hold_share <= 1:
            raise ValueError(f"hold_share must be in [0, 1], got {self.hold_share}")


@dataclass(frozen=True, slots=True)
class RestLevel:
    """The drifting noise floor of one channel: ``level_v * exp(drift(t)) * steps(t)``.

    The rest noise has this RMS (the fast flicker has unit mean square on top of it).

    Attributes
    ----------
    level_v : float
        Median of the slow drift (the channel's nominal rest level), volts.
    drift_sigma, drift_s : float
        As in :class:`RealisticSpec`.
    knot_s, knot_log : tuple of float
        The drift: ``ln`` of the factor at these times, linearly interpolated in between.
    steps : tuple of (float, float)
        ``(time_s, factor)``: from ``time_s`` on, the level is multiplied by ``factor``.
    flicker_sigma, flicker_s : float
        As in :class:`RealisticSpec`.
    """

    level_v: float
    drift_sigma: float
    drift_s: float
    knot_s: tuple[float, ...]
    knot_log: tuple[float, ...]
    steps: tuple[tuple[float, float], ...]
    flicker_sigma: float
    flicker_s: float

    def at(self, t: np.ndarray | float) -> np.ndarray:
        """The rest level (volts RMS) at times ``t`` in seconds."""
        t = np.asarray(t, dtype=np.float64)
        out: np.ndarray = self.level_v * np.exp(np.interp(t, self.knot_s, self.knot_log))
        for when, factor in self.steps:
            out = np.where(t >= when, out * factor, out)
        return out


@dataclass(frozen=True, slots=True)
class Dropout:
    """A run of samples stuck exactly at the rail value.

    Attributes
    ----------
    channel : str
        Raw channel label.
    index : int
        0-based order on the channel.
    start_sample, end_sample : int
        ``data[start_sample:end_sample]`` equals ``rail_v`` exactly.
    start_s, end_s : float
        The same in seconds (``sample / rate``).
    rail_v : float
        The stuck value, volts (a float32 value).
    baseline_step_v : float
        DC step of the signal from ``end_sample`` on, volts.
    burst_index : int, optional
        The burst it lies over (``dropout_over_burst``); ``None`` in rest.
    """

    channel: str
    index: int
    start_sample: int
    end_sample: int
    start_s: float
    end_s: float
    rail_v: float
    baseline_step_v: float
    burst_index: int | None = None


@dataclass(frozen=True, slots=True)
class Blip:
    """A brief spike of the rest envelope; not a contraction (the game ignores it).

    Attributes
    ----------
    channel : str
        Raw channel label.
    index : int
        0-based order on the channel.
    center_s, width_s : float
        Centre and full width of its Hann window, s.
    height : float
        Target peak of the 50 ms RMS envelope over the blip, as x the local rest level.
    peak_v : float
        Peak of the blip's own 50 ms RMS envelope, volts (``rest * sqrt(height**2 - 1)``).
    """

    channel: str
    index: int
    center_s: float
    width_s: float
    height: float
    peak_v: float

    @property
    def start_s(self) -> float:
        return self.center_s - self.width_s / 2

    @property
    def end_s(self) -> float:
        return self.center_s + self.width_s / 2


@dataclass(frozen=True, slots=True)
class MainsHum:
    """The mains interference of one channel.

    Attributes
    ----------
    frequency_hz : float
        Fundamental, Hz.
    lines_hz : tuple of float
        Fundamental and harmonics present.
    line_rms_v : tuple of float
        RMS of each line (before the wander), volts.
    rms_v : float
        RMS of all lines together, volts.
    fraction : float
        Share of the channel's 20-450 Hz power on the hum (before clipping and dropouts).
    wander_sigma : float
        SD of the natural log of its slow amplitude wander.
    """

    frequency_hz: float
    lines_hz: tuple[float, ...]
    line_rms_v: tuple[float, ...]
    rms_v: float
    fraction: float
    wander_sigma: float


@dataclass(frozen=True, slots=True)
class ChannelTruth:
    """Everything :func:`realistic_signals` put into one raw channel.

    Attributes
    ----------
    label : str
        Raw channel label.
    spec : RealisticSpec
        The parameters it was drawn from.
    rest : RestLevel
        The noise floor.
    bursts : tuple of Burst
        True contractions in time order.
    clusters : tuple of int
        Cluster number of each burst (same order as ``bursts``).
    mvc_v : float, optional
        The plateau RMS at 100 % MVC: the strongest burst's amplitude (``None`` without bursts).
    efforts : tuple of Burst
        Weak efforts, in time order: activity, but not contractions.
    blips : tuple of Blip
        Rest spikes, in time order.
    dropouts : tuple of Dropout
        Rail dropouts, in time order.
    hum : MainsHum, optional
        ``None`` when switched off.
    dc_v : float
        DC offset before any baseline step, volts.
    clipped_samples : int
        Samples clipped at ``spec.clip_v`` (dropouts excluded).
    activated : tuple of (float, float)
        Segments (s) where the game's ``activated`` channel is non-zero.
    """

    label: str
    spec: RealisticSpec
    rest: RestLevel
    bursts: tuple[Burst, ...]
    clusters: tuple[int, ...]
    mvc_v: float | None
    efforts: tuple[Burst, ...]
    blips: tuple[Blip, ...]
    dropouts: tuple[Dropout, ...]
    hum: MainsHum | None
    dc_v: float
    clipped_samples: int
    activated: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class RealisticTruth:
    """What :func:`realistic_signals` put into a recording.

    Attributes
    ----------
    rate : float
        Analog sampling rate, Hz.
    duration_s : float
        ``n_samples / rate``.
    n_samples : int
        Samples per channel.
    channels : tuple of str
        Raw EMG labels; the activated labels are ``CHn activated``.
    details : tuple of ChannelTruth
        One per raw channel, same order.
    metadata : GameMetadata
        What was written into ``INFO`` / ``SUBJECTS``.
    recorded_at : datetime
        ``INFO:TIME``.
    file_name : str
        A GHOSTLY-style file name.
    seed : int
    """

    rate: float
    duration_s: float
    n_samples: int
    channels: tuple[str, ...]
    details: tuple[ChannelTruth, ...]
    metadata: GameMetadata
    recorded_at: datetime
    file_name: str
    seed: int

    def channel(self, label: str) -> ChannelTruth:
        """The truth of one raw channel."""
        return self.details[self.channels.index(label)]

    def bursts_for(self, label: str) -> tuple[Burst, ...]:
        """The true bursts of one raw channel, in time order."""
        return self.channel(label).bursts

    @property
    def bursts(self) -> tuple[Burst, ...]:
        """Every burst, ordered by channel then time."""
        return tuple(b for ch in self.details for b in ch.bursts)

    @property
    def mvc(self) -> dict[str, float | None]:
        """Per raw channel, the plateau RMS at 100 % MVC (volts)."""
        return {ch.label: ch.mvc_v for ch in self.details}


def realistic_signals(
    *,
    seed: int = 0,
    duration_s: float = 90.0,
    rate: float = 990.0,
    n_channels: int = 2,
    spec: RealisticSpec | Sequence[RealisticSpec] = RealisticSpec(),
    **overrides: Any,
) -> tuple[tuple[str, ...], np.ndarray, RealisticTruth]:
    """Generate GHOSTLY channels with the artefacts of real sessions (no file).

    Per raw channel, on a drifting, flickering noise floor: clusters of bursts (band-limited
    Gaussian "EMG" under raised-cosine ramps, with an amplitude tremor) and a few long holds;
    brief rest blips; mains hum with harmonics and a wandering amplitude; optional clipping;
    rail dropouts with a baseline step after each. The ``activated`` partner is
    :func:`game_activated` of the final raw channel, dropouts included. Blips and, by default,
    dropouts lie in rest at least ``clearance_s`` from any burst, so the truth is unambiguous.

    Each channel draws from its own random streams seeded by ``(seed, channel)``, one stream
    per phenomenon: switching one phenomenon off leaves the draws of the others unchanged
    (blips and dropouts still avoid each other).

    Parameters
    ----------
    seed : int
        Seed of every random draw (non-negative).
    duration_s : float
        Recording length in seconds.
    rate : float
        Sampling rate in Hz (the game declares 990).
    n_channels : int
        Number of raw EMG channels (each gets an ``activated`` partner).
    spec : RealisticSpec or sequence of RealisticSpec
        What every channel holds, or one spec per channel (its length must be ``n_channels``).
    **overrides
        :class:`RealisticSpec` fields applied to every channel's spec, e.g. ``blip_rate=0``.

    Returns
    -------
    labels : tuple of str
        ``("CH1 Raw", ..., "CH1 activated", ...)``.
    data : ndarray, shape (2 * n_channels, n_samples), float64
        Samples in volts.
    truth : RealisticTruth
    """
    specs = (spec,) * n_channels if isinstance(spec, RealisticSpec) else tuple(spec)
    if len(specs) != n_channels:
        raise ValueError(f"{len(specs)} channel specs for n_channels={n_channels}")
    specs = tuple(replace(s, **overrides) for s in specs)
    n = _n_samples(duration_s, rate)
    raw_labels, activated_labels = _labels(n_channels)
    data = np.empty((2 * n_channels, n), dtype=np.float64)
    details = []
    for c, (label, chspec) in enumerate(zip(raw_labels, specs, strict=True)):
        raw, detail = _realistic_channel(label, chspec, seed, c, n, rate)
        details.append(replace(detail, activated=_put_channel(data, c, raw, rate)))
    meta, when, file_name = _session(np.random.default_rng([seed, 1 << 16]), seed, n / rate)
    truth = RealisticTruth(
        rate=float(rate),
        duration_s=n / rate,
        n_samples=n,
        channels=raw_labels,
        details=tuple(details),
        metadata=meta,
        recorded_at=when,
        file_name=file_name,
        seed=seed,
    )
    return raw_labels + activated_labels, data, truth


def realistic_recording(
    *, seed: int = 0, duration_s: float = 90.0, rate: float = 990.0, **kwargs: Any
) -> tuple[bytes, RealisticTruth]:
    """A realistic synthetic GHOSTLY recording as C3D bytes, with its ground truth.

    Parameters
    ----------
    seed, duration_s, rate, **kwargs
        As for :func:`realistic_signals`.

    Returns
    -------
    content : bytes
        The C3D file (float32 samples).
    truth : RealisticTruth
    """
    return _as_c3d(realistic_signals(seed=seed, duration_s=duration_s, rate=rate, **kwargs), rate)


# one random stream per phenomenon, so switching one off leaves the others' draws alone
_STREAMS = (
    "level", "noise", "flicker", "bursts", "carrier", "tremor", "blips", "dropouts", "hum", "dc",
    "efforts",
)  # fmt: skip


def _realistic_channel(
    label: str, spec: RealisticSpec, seed: int, c: int, n: int, rate: float
) -> tuple[np.ndarray, ChannelTruth]:
    seeds = np.random.SeedSequence([seed, c]).spawn(len(_STREAMS))
    rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds, strict=True)}
    duration = n / rate
    t = np.arange(n) / rate
    rest = _rest_level(rng["level"], spec, duration)
    level = rest.at(t)

    # the amplifier's 20-450 Hz noise, its power wandering slowly (drift, steps) and fast;
    # scaled so its RMS in the analysis band is the rest level, as the envelope measures it
    noise = _band_noise(rng["noise"], n, rate, 20.0, 450.0)
    noise /= np.sqrt(np.mean(bandpass(noise, design_bandpass(rate)) ** 2))
    raw = level * _lognormal(rng["flicker"], t, spec.flicker_sigma, spec.flicker_s) * noise

    placed = _place_bursts(rng["bursts"], spec, rest.level_v, duration)
    bursts = tuple(
        Burst(label, k, start, end, amp, ramp)
        for k, (start, end, amp, ramp, _) in enumerate(placed)
    )
    strongest = max((b.amplitude for b in bursts), default=None)
    busy = [
        (b.start_s - spec.effort_clearance_s, b.end_s + spec.effort_clearance_s) for b in bursts
    ]
    efforts = _place_efforts(rng["efforts"], spec, label, strongest, busy, duration)
    amplitude = np.zeros(n)
    tremor = _lognormal(rng["tremor"], t, spec.tremor_sigma, spec.tremor_s)
    for b in bursts + efforts:
        i0, i1 = np.searchsorted(t, [b.start_s, b.end_s])
        p0, p1 = np.searchsorted(t, [b.start_s + b.ramp_s, b.end_s - b.ramp_s])
        _add_burst(amplitude, t, b.start_s, b.end_s, b.ramp_s, b.amplitude)
        # the tremor wobbles the plateau without changing its RMS, so `amplitude` stays true
        plateau = tremor[p0:p1] if p1 > p0 else tremor[i0:i1]
        amplitude[i0:i1] *= tremor[i0:i1] / np.sqrt(np.mean(plateau**2))
    raw += amplitude * _emg_carrier(rng["carrier"], n, rate)

    busy = [(b.start_s - spec.clearance_s, b.end_s + spec.clearance_s) for b in bursts + efforts]
    dropouts = _place_dropouts(rng["dropouts"], spec, label, bursts, busy, duration, rate)
    busy += [(d.start_s - spec.clearance_s, d.end_s + spec.clearance_s) for d in dropouts]
    blips = _place_blips(rng["blips"], spec, label, rest, busy, duration)
    for blip in blips:
        raw += _blip_wave(rng["blips"], blip, t, rate)

    hum = None
    strength = spec.hum_x_rest if spec.hum_fraction is None else spec.hum_fraction
    if spec.hum_harmonics > 0 and strength > 0:
        hum, wave = _mains(rng["hum"], spec, t, rate, rest.level_v, raw)
        raw += wave

    dc = float(rng["dc"].uniform(*spec.dc_v))
    raw += dc
    for d in dropouts:
        raw[d.end_sample :] += d.baseline_step_v
    clipped = np.zeros(n, dtype=bool)
    if spec.clip_v is not None:
        clipped = np.abs(raw) >= spec.clip_v
        np.clip(raw, -spec.clip_v, spec.clip_v, out=raw)
    for d in dropouts:
        raw[d.start_sample : d.end_sample] = d.rail_v
        clipped[d.start_sample : d.end_sample] = False

    detail = ChannelTruth(
        label=label,
        spec=spec,
        rest=rest,
        bursts=bursts,
        clusters=tuple(p[4] for p in placed),
        mvc_v=strongest,
        efforts=efforts,
        blips=blips,
        dropouts=dropouts,
        hum=hum,
        dc_v=dc,
        clipped_samples=int(np.count_nonzero(clipped)),
        activated=(),
    )
    return raw, detail


def _smooth_gauss(
    rng: np.random.Generator, span_s: float, width_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """A unit-variance Gaussian process: white noise smoothed by a Gaussian of ``width_s``.

    Returns knot times and values (8 knots per kernel width), for linear interpolation.
    """
    step = width_s / 8
    m = math.ceil(span_s / step) + 1
    kernel = np.exp(-0.5 * (np.arange(-32, 33) / 8.0) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))  # unit variance of the smoothed noise
    values = np.convolve(rng.standard_normal(m + kernel.size - 1), kernel, mode="valid")
    return np.arange(m) * step, values


def _lognormal(rng: np.random.Generator, t: np.ndarray, sigma: float, width_s: float) -> np.ndarray:
    """A smooth log-normal modulation of unit mean square (all ones when ``sigma`` is 0)."""
    if sigma <= 0:
        return np.ones(t.size)
    knots, g = _smooth_gauss(rng, float(t[-1]) if t.size else 0.0, width_s)
    out: np.ndarray = np.exp(sigma * np.interp(t, knots, g) - sigma**2)
    return out


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _rest_level(rng: np.random.Generator, spec: RealisticSpec, duration: float) -> RestLevel:
    level_v = _log_uniform(rng, spec.rest_v)
    knots, g = _smooth_gauss(rng, duration, spec.drift_s)
    steps = []
    for _ in range(spec.rest_steps):
        when = float(rng.uniform(0.1, 0.9) * duration)
        factor = float(rng.uniform(*spec.rest_step_factor))
        steps.append((when, factor if rng.random() < 0.5 else 1.0 / factor))
    return RestLevel(
        level_v=level_v,
        drift_sigma=spec.drift_sigma,
        drift_s=spec.drift_s,
        knot_s=tuple(float(k) for k in knots),
        knot_log=tuple(float(v) for v in spec.drift_sigma * g),
        steps=tuple(sorted(steps)),
        flicker_sigma=spec.flicker_sigma,
        flicker_s=spec.flicker_s,
    )


def _place_bursts(
    rng: np.random.Generator, spec: RealisticSpec, rest_v: float, duration: float
) -> list[tuple[float, float, float, float, int]]:
    """Clusters of bursts: ``(start_s, end_s, amplitude, ramp_s, cluster)`` in time order."""
    out: list[tuple[float, float, float, float, int]] = []
    start = spec.lead_s + rng.uniform(0.0, 1.0)
    cluster = 0
    while True:
        size = int(rng.integers(spec.cluster_size[0], spec.cluster_size[1] + 1))
        for k in range(size):
            if rng.random() < spec.hold_share:
                length = float(rng.uniform(*spec.hold_s))
            else:
                length = _log_uniform(rng, spec.burst_s)
            if start + length > duration - _TAIL_S:
                return out
            ramp = min(float(rng.uniform(*spec.ramp_s)), length / 3)
            amp = rest_v * _log_uniform(rng, spec.contrast)
            out.append((start, start + length, amp, ramp, cluster))
            start += length
            if k < size - 1:
                start += rng.uniform(*spec.intra_gap_s)
        start += rng.uniform(*spec.inter_gap_s)
        cluster += 1


def _place_efforts(
    rng: np.random.Generator,
    spec: RealisticSpec,
    label: str,
    strongest: float | None,
    busy: list[tuple[float, float]],
    duration: float,
) -> tuple[Burst, ...]:
    """Weak efforts in the rest between bursts (none on a channel without bursts)."""
    if spec.effort_rate <= 0 or strongest is None:
        return ()
    lo, hi = spec.lead_s, duration - _TAIL_S
    free_s = (hi - lo) - sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in busy)
    taken = list(busy)
    placed = []
    for _ in range(int(rng.poisson(spec.effort_rate * max(free_s, 0.0)))):
        length = _log_uniform(rng, spec.burst_s)
        amp = strongest * _log_uniform(rng, spec.effort_fraction)
        ramp = min(float(rng.uniform(*spec.ramp_s)), length / 3)
        for _ in range(50):
            start = float(rng.uniform(lo, hi - length))
            span = (start, start + length)
            if _free(span, taken):
                # two efforts closer than a merge gap would be one: keep them a second apart
                taken.append((span[0] - 1.0, span[1] + 1.0))
                placed.append((start, start + length, amp, ramp))
                break
    placed.sort()
    return tuple(Burst(label, k, *p) for k, p in enumerate(placed))


def _free(span: tuple[float, float], busy: list[tuple[float, float]]) -> bool:
    return all(span[1] <= a or span[0] >= b for a, b in busy)


def _place_dropouts(
    rng: np.random.Generator,
    spec: RealisticSpec,
    label: str,
    bursts: tuple[Burst, ...],
    busy: list[tuple[float, float]],
    duration: float,
    rate: float,
) -> tuple[Dropout, ...]:
    rail = float(np.float32(spec.rail_v))  # what a float32 C3D file can hold exactly
    taken = list(busy)
    spans: list[tuple[int, int, int | None]] = []
    for k in range(spec.dropouts):
        length = round(rng.uniform(*spec.dropout_s) * rate)
        if k == 0 and spec.dropout_over_burst:
            # inside the plateau of a burst long enough to hold it
            fits = [b for b in bursts if b.duration_s - 2 * b.ramp_s > length / rate + 0.1]
            if fits:
                b = fits[int(rng.integers(len(fits)))]
                lo, hi = b.start_s + b.ramp_s + 0.05, b.end_s - b.ramp_s - 0.05 - length / rate
                start = round(rng.uniform(lo, hi) * rate)
                spans.append((start, start + length, b.index))
                taken.append((lo - spec.clearance_s, hi + length / rate + spec.clearance_s))
                continue
        for _ in range(200):  # rejection sampling; a crowded channel gets fewer dropouts
            start = round(rng.uniform(spec.lead_s, duration - _TAIL_S) * rate)
            span = (start / rate, (start + length) / rate)
            if span[1] <= duration - _TAIL_S and _free(span, taken):
                spans.append((start, start + length, None))
                taken.append((span[0] - spec.clearance_s, span[1] + spec.clearance_s))
                break
    spans.sort()
    return tuple(
        Dropout(
            channel=label,
            index=k,
            start_sample=i0,
            end_sample=i1,
            start_s=i0 / rate,
            end_s=i1 / rate,
            rail_v=rail,
            baseline_step_v=float(rng.uniform(-spec.dropout_step_v, spec.dropout_step_v)),
            burst_index=over,
        )
        for k, (i0, i1, over) in enumerate(spans)
    )


def _place_blips(
    rng: np.random.Generator,
    spec: RealisticSpec,
    label: str,
    rest: RestLevel,
    busy: list[tuple[float, float]],
    duration: float,
) -> tuple[Blip, ...]:
    if spec.blip_rate <= 0:
        return ()
    free_s = duration - sum(
        min(b, duration) - max(a, 0.0) for a, b in busy if b > 0 and a < duration
    )
    count = int(rng.poisson(spec.blip_rate * max(free_s, 0.0)))
    taken = list(busy)
    placed = []
    for _ in range(count):
        width = float(rng.uniform(*spec.blip_width_s))
        height = _log_uniform(rng, spec.blip_height)
        for _ in range(50):
            center = float(rng.uniform(0.5, duration - 0.5))
            span = (center - width / 2, center + width / 2)
            if _free(span, taken):
                taken.append((span[0] - 0.05, span[1] + 0.05))  # blips may come close together
                placed.append((center, width, height))
                break
    placed.sort()
    return tuple(
        Blip(
            channel=label,
            index=k,
            center_s=center,
            width_s=width,
            height=height,
            peak_v=float(rest.at(center)) * math.sqrt(height**2 - 1),
        )
        for k, (center, width, height) in enumerate(placed)
    )


def _blip_wave(rng: np.random.Generator, blip: Blip, t: np.ndarray, rate: float) -> np.ndarray:
    """A Hann-windowed burst of EMG-band noise whose own 50 ms RMS envelope peaks at ``peak_v``."""
    out = np.zeros(t.size)
    i0, i1 = np.searchsorted(t, [blip.start_s, blip.end_s])
    m = i1 - i0
    if m < 3:
        return out
    wave = np.hanning(m) * _emg_carrier(rng, m, rate)
    pad = round(ENVELOPE_S * rate)
    env = rms_envelope(np.pad(wave, pad), rate, ENVELOPE_S)
    out[i0:i1] = wave * (blip.peak_v / env.max())
    return out


def _mains(
    rng: np.random.Generator,
    spec: RealisticSpec,
    t: np.ndarray,
    rate: float,
    rest_v: float,
    other: np.ndarray,
) -> tuple[MainsHum, np.ndarray]:
    lines = [
        h * spec.hum_hz
        for h in range(1, spec.hum_harmonics + 1)
        if h * spec.hum_hz < NYQUIST_MARGIN * rate / 2
    ]
    rel = np.array([spec.hum_decay**h for h in range(len(lines))])
    rel /= np.sqrt(np.sum(rel**2))  # unit RMS over all lines
    wave = np.zeros(t.size)
    for f, a in zip(lines, rel, strict=True):
        wave += a * math.sqrt(2) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    wave *= _lognormal(rng, t, spec.hum_wander_sigma, spec.hum_wander_s)
    filt = design_bandpass(rate)
    p_hum = float(np.mean(bandpass(wave, filt) ** 2))
    p_other = float(np.mean(bandpass(other, filt) ** 2))
    if spec.hum_fraction is not None:
        scale = math.sqrt(spec.hum_fraction / (1 - spec.hum_fraction) * p_other / p_hum)
    else:
        scale = spec.hum_x_rest * rest_v
    hum = MainsHum(
        frequency_hz=float(spec.hum_hz),
        lines_hz=tuple(float(f) for f in lines),
        line_rms_v=tuple(float(scale * a) for a in rel),
        rms_v=float(scale),
        fraction=scale**2 * p_hum / (scale**2 * p_hum + p_other),
        wander_sigma=spec.hum_wander_sigma,
    )
    return hum, scale * wave


__all__ = [
    "Blip",
    "Burst",
    "ChannelTruth",
    "Dropout",
    "GroundTruth",
    "MainsHum",
    "RealisticSpec",
    "RealisticTruth",
    "RestLevel",
    "c3d_bytes",
    "game_activated",
    "ghostly_recording",
    "ghostly_signals",
    "realistic_recording",
    "realistic_signals",
    "write_ghostly",
]
