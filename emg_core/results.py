"""Frozen, typed results of one analysis.

These names are a contract: the JSON printed by ``emgd analyze --json`` and the columns of
``public.session_parameters`` / ``public.contractions`` use exactly the same field names.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return _jsonable(value.item())
    return value


def _as_dict(result: Any) -> dict[str, Any]:
    out: dict[str, Any] = _jsonable(result)
    return out


@dataclass(frozen=True, slots=True)
class Contraction:
    """One detected contraction on one channel; times in ms from the recording's start."""

    index: int
    start_ms: float
    end_ms: float
    duration_ms: float
    peak_amplitude: float
    mean_amplitude: float
    meets_mvc: bool
    meets_duration: bool
    is_good: bool
    mpf_hz: float | None = None
    mdf_hz: float | None = None
    # within-contraction trend of MPF / MDF, only for contractions long enough to hold several
    # spectral windows (None otherwise)
    mpf_slope_hz_per_s: float | None = None
    mdf_slope_hz_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class ChannelResult:
    """Per-channel session metrics; one row of ``public.session_parameters``.

    A channel that cannot be trusted (``usable`` false: too noisy, mostly artefact) gives no
    counts: the contraction counts, rates, time under tension and MVC are ``None`` and
    ``warnings`` says why. Amplitudes are in ``unit`` (volts where the file names no unit).
    """

    name: str
    sampling_rate: float
    unit: str
    mvc_value: float | None
    mvc_threshold: float | None
    mvc_method: str  # one of options.MVC_METHODS; "session_estimate" is relative
    duration_threshold_ms: float
    expected_contractions: int
    contractions_total: int | None
    contractions_good: int | None
    contractions_mvc_compliant: int | None
    contractions_duration_compliant: int | None
    completion_rate: float | None  # min(total, expected) / expected
    intensity_rate: float | None  # mvc-compliant / total (0 when none)
    duration_rate: float | None  # duration-compliant / total (0 when none)
    compliance_rate: float | None  # good, capped at expected, / expected
    time_under_tension_ms: float | None
    rms: float
    mav: float
    mpf_hz: float | None
    mdf_hz: float | None
    fi_nsm5: float | None
    fi_nsm5_relative: float | None  # FI_nsm5 at the last contraction / the first (log-linear fit)
    mpf_slope_hz_per_s: float | None
    mdf_slope_hz_per_s: float | None
    mpf_slope_pct_per_s: float | None
    mdf_slope_pct_per_s: float | None
    signal_quality: float  # 0..1
    activation_agreement: float | None  # GHOSTLY only: agreement with the game's activated channel
    usable: bool = True  # false: no counts, see warnings
    warnings: tuple[str, ...] = ()  # short sentences for a therapist
    masked_samples: int = 0  # samples excluded as artefact (stuck, railed, dropout, steps)
    masked_s: float = 0.0  # the same in seconds
    mains_hz: float | None = None  # the mains line found in the signal (e.g. 49.5), None if none
    mains_fraction: float = 0.0  # share of in-band power on the mains lines, before removal
    mains_removed: bool = False  # whether the lines were notched out before analysis
    rest_level: float | None = None  # envelope at rest (noise floor), in unit
    onset_level: float | None = None  # envelope level that starts a contraction, in unit
    offset_level: float | None = None  # envelope level that ends one, in unit
    mvc_source: str | None = None  # where the MVC came from, in words
    mvc_start_ms: float | None = None  # window of an estimated MVC
    mvc_end_ms: float | None = None
    fatigue_reason: str | None = None  # why the fatigue fields are None, when they are
    contractions: tuple[Contraction, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class GameMetadata:
    """What the GHOSTLY game writes into the INFO and SUBJECTS groups (all optional)."""

    game_name: str | None = None
    game_level: int | None = None
    game_duration: float | None = None
    therapist_id: str | None = None
    player_name: str | None = None
    game_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class SessionResult:
    """The whole analysis of one C3D recording."""

    file: str
    analysis_version: str
    processing: dict[str, Any]
    recorded_at: datetime | None
    duration_s: float
    metadata: GameMetadata
    overall_compliance: float  # mean of the usable channels' compliance_rate
    symmetry: float | None  # left/right symmetry 0..1 (1 = equal); None without a pair
    channels: tuple[ChannelResult, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)
