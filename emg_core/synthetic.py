"""Synthetic GHOSTLY recordings with known ground truth, written as real C3D files.

The generator draws, per channel, contractions at known times and amplitudes (raised-cosine
ramps into and out of a plateau of band-limited Gaussian "EMG"), on top of white baseline noise,
50 Hz mains hum and a slow baseline drift, then computes the game's ``CHn activated`` channel the
way the game does (causal band-pass 5-25 Hz, rectification, 100 ms moving average, zero below a
rest threshold of mean + 3 SD over the first 2 s). The file is written with ``ezc3d`` in the
game's layout (``CH1 Raw``, ``CH2 Raw``, ``CH1 activated``, ``CH2 activated``, volts, ``INFO``
and ``SUBJECTS`` groups), so tests exercise the same reader real uploads go through.

Everything is a pure function of its arguments (``seed`` included): the same call gives the
same bytes' samples and the same :class:`GroundTruth`.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import signal

from .results import GameMetadata

#: the game's rest threshold: mean + 3 SD of its smoothed signal over the first 2 s
GAME_REST_S = 2.0
GAME_THRESHOLD_SD = 3.0


@dataclass(frozen=True, slots=True)
class Burst:
    """One true contraction.

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
    n = round(duration_s * rate)
    n -= n % _samples_per_frame(n)  # so the C3D file holds exactly these samples
    t = np.arange(n) / rate
    noise_rms = mvc_v / 10 ** (snr_db / 20)
    raw_labels = tuple(f"CH{c + 1} Raw" for c in range(n_channels))
    data = np.empty((2 * n_channels, n), dtype=np.float64)
    # EMG spectrum: white noise through a 2nd-order 30-250 Hz band-pass (MPF near 110 Hz)
    emg_sos = signal.butter(2, [30.0, min(250.0, 0.45 * rate)], btype="band", fs=rate, output="sos")
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
        emg = signal.sosfilt(emg_sos, rng.standard_normal(n))
        emg /= np.sqrt(np.mean(emg**2))
        raw = envelope * emg + noise_rms * rng.standard_normal(n)
        hum = hum_ratio * noise_rms * math.sqrt(2)
        raw += hum * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 6))
        drift_f = rng.uniform(0.05, 0.3)
        raw += drift_ratio * noise_rms * np.sin(2 * np.pi * drift_f * t + rng.uniform(0, 6))
        data[c] = raw
        data[n_channels + c] = game_activated(raw, rate)
        activated[label] = _segments(data[n_channels + c] > 0, rate)
    labels = raw_labels + tuple(f"CH{c + 1} activated" for c in range(n_channels))

    when = datetime(2023, 3, 21, 17, 50, tzinfo=UTC)
    meta = GameMetadata(
        game_name="Ghostly",
        game_level=int(rng.integers(1, 6)),
        game_duration=round(n / rate, 3),
        therapist_id=f"T{seed % 1000:03d}",
        player_name=f"P{seed % 10000:04d}",
        game_score=float(rng.integers(0, 1000)),
    )
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
        file_name=f"Ghostly_Emg_{when:%Y%m%d_%H-%M}-{seed % 60:02d}-{seed % 10000:04d}.c3d",
        seed=seed,
        activated=activated,
    )
    return labels, data, truth


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
    with tempfile.TemporaryDirectory(prefix="emg-synth-") as tmp:
        path = os.path.join(tmp, "recording.c3d")
        c.write(path)
        return Path(path).read_bytes()


def _samples_per_frame(n: int) -> int:
    return next(k for k in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if n / k <= 65535)


def ghostly_recording(
    *, seed: int = 0, duration_s: float = 60.0, rate: float = 990.0, **kwargs
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
    labels, data, truth = ghostly_signals(seed=seed, duration_s=duration_s, rate=rate, **kwargs)
    content = c3d_bytes(labels, data, rate, metadata=truth.metadata, recorded_at=truth.recorded_at)
    return content, truth


def write_ghostly(path: str | os.PathLike, **kwargs) -> GroundTruth:
    """Write :func:`ghostly_recording` to ``path`` and return the ground truth."""
    content, truth = ghostly_recording(**kwargs)
    Path(path).write_bytes(content)
    return truth


__all__ = [
    "Burst",
    "GroundTruth",
    "c3d_bytes",
    "game_activated",
    "ghostly_recording",
    "ghostly_signals",
    "write_ghostly",
]
