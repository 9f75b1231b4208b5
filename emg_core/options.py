"""Every tunable of the analysis in one frozen object, with the clinical protocol's defaults."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidOptionsError


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
    stuck_min_ms, artefact_guard_ms : float
        Equal samples lasting ``stuck_min_ms`` (25) are a dropout; ``artefact_guard_ms`` (75)
        on each side is masked with it (the filters' and the envelope's reach).
    mains_min_fraction : float
        Mains lines carrying at least this share of the in-band power (0.03) are notched out;
        a fainter line hides no EMG.
    rest_block_ms, rest_window_ms, rest_quantile : float
        Rest level: the ``rest_quantile`` percentile (50) of each ``rest_block_ms`` block (250),
        the lowest within ``rest_window_ms`` (8000) around each moment.
    onset_exponent, onset_fraction, onset_min, onset_max : float
        Onset level over rest: ``max(clip(D ** onset_exponent, onset_min, onset_max),
        onset_fraction * D)`` with ``D`` the channel's strongest sustained activity over rest
        (0.55, 0.12, 3, 30): a little over half-way to the activity in dB, and at least 12 %
        of it.
    offset_exponent, offset_min : float
        Offset (hysteresis) level over rest, ``clip(D ** offset_exponent, offset_min, onset)``
        (0.35, 2).
    refine_ratio, refine_quantile, refine_reach_ms : float
        Edges move to where the envelope is back within rest's own spread: its
        ``refine_quantile`` percentile at rest (90), at least ``refine_ratio`` x rest (1.2), at
        most ``refine_reach_ms`` (500) away.
    sustain_ms : float
        A contraction's moving mean over this long must reach the onset level (250).
    split_depth, split_smooth_ms : float
        Split a contraction at a valley this many times below the peaks beside it (4), on the
        envelope's moving mean over ``split_smooth_ms`` (150).
    min_contrast : float
        Activity must stand this many times above rest to count anything (4).
    min_contraction_ms, merge_gap_ms, max_contraction_ms : float
        Drop shorter contractions (100), merge closer ones (200), split longer ones (10000).
    min_peak_fraction : float
        A weak effort whose peak stays below this fraction (0.3) of the channel's typical
        strong contraction (median peak of its strongest quarter) is not a contraction; it is
        counted in a warning instead (0 counts every run).
    mvc : mapping of str to float
        Given MVC per channel label, in the channel's unit; other channels get an estimate.
    mvc_methods : mapping of str to str
        Where each given MVC came from (one of ``MVC_METHODS``; "given" when absent).
    channels : mapping of str to mapping
        Per-channel targets from a therapist, by channel label, ``"*"`` for every channel
        without its own entry: ``mvc_value`` with ``mvc_unit`` (V, mV or uV; converted to the
        channel's unit) and ``mvc_method``, ``mvc_percentage``, ``duration_threshold_ms``,
        ``expected_contractions``. A field missing there falls back to ``"*"``, then to the
        session-wide field of the same name. An MVC written in the C3D file outranks them all.
    mvc_window_ms : float
        Window of the MVC estimate (best 500 ms of the envelope, artefacts excluded).
    mvc_percentage : float
        Intensity threshold as % of MVC (75).
    duration_threshold_ms : float
        Minimum duration of a good contraction (2000).
    expected_contractions : int
        Contractions the protocol asks for per channel (12).
    include : str or None
        Regular expression selecting the EMG channels by label (overrides discovery).
    welch_segment_ms : float
        Welch segment length (250 ms, Hann, 50 % overlap).
    fatigue_min_contractions : int
        Contractions with a spectrum needed for a fatigue trend across the session (3).
    fatigue_min_contraction_ms : float
        Shortest contraction given a fatigue trend of its own (1500).
    max_masked_share, max_clipped_share : float
        Beyond these shares of masked (0.5) or saturated (0.05) samples a channel is unusable.
    """

    highpass_hz: float = 20.0
    lowpass_hz: float = 450.0
    filter_order: int = 4
    envelope_window_ms: float = 50.0
    stuck_min_ms: float = 25.0
    artefact_guard_ms: float = 75.0
    mains_min_fraction: float = 0.03
    rest_block_ms: float = 250.0
    rest_window_ms: float = 8000.0
    rest_quantile: float = 50.0
    onset_exponent: float = 0.55
    onset_fraction: float = 0.12
    onset_min: float = 3.0
    onset_max: float = 30.0
    offset_exponent: float = 0.35
    offset_min: float = 2.0
    refine_ratio: float = 1.2
    refine_quantile: float = 90.0
    refine_reach_ms: float = 500.0
    sustain_ms: float = 250.0
    split_depth: float = 4.0
    split_smooth_ms: float = 150.0
    min_contrast: float = 4.0
    min_contraction_ms: float = 100.0
    merge_gap_ms: float = 200.0
    max_contraction_ms: float = 10_000.0
    min_peak_fraction: float = 0.3
    mvc: Mapping[str, float] = field(default_factory=dict)
    mvc_methods: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mvc_window_ms: float = 500.0
    mvc_percentage: float = 75.0
    duration_threshold_ms: float = 2000.0
    expected_contractions: int = 12
    include: str | None = None
    welch_segment_ms: float = 250.0
    fatigue_min_contractions: int = 3
    fatigue_min_contraction_ms: float = 1500.0
    max_masked_share: float = 0.5
    max_clipped_share: float = 0.05

    def __post_init__(self) -> None:
        # a read-only copy: the caller's dict cannot change a frozen options object later
        mvc = dict(self.mvc or {})
        for label, value in mvc.items():
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InvalidOptionsError(
                    f"the MVC given for channel {label!r} must be a positive number, not {value!r}"
                )
        object.__setattr__(self, "mvc", _FrozenDict({str(k): float(v) for k, v in mvc.items()}))
        methods = dict(self.mvc_methods or {})
        for label, method in methods.items():
            if method not in GIVEN_METHODS:
                raise InvalidOptionsError(
                    f"the MVC method of channel {label!r} must be one of "
                    f"{', '.join(GIVEN_METHODS)}, not {method!r}"
                )
        object.__setattr__(self, "mvc_methods", _FrozenDict(methods))
        object.__setattr__(
            self,
            "channels",
            _FrozenDict(
                {
                    str(k): _FrozenDict(_channel_targets(str(k), v))
                    for k, v in (self.channels or {}).items()
                }
            ),
        )
        checks = [
            (0 < self.highpass_hz < self.lowpass_hz, "highpass_hz must be > 0 and < lowpass_hz"),
            (1 <= self.filter_order <= 10, "filter_order must be between 1 and 10"),
            (self.envelope_window_ms > 0, "envelope_window_ms must be > 0"),
            (self.stuck_min_ms > 0, "stuck_min_ms must be > 0"),
            (self.artefact_guard_ms >= 0, "artefact_guard_ms must be >= 0"),
            (0 <= self.mains_min_fraction <= 1, "mains_min_fraction must be in [0, 1]"),
            (self.rest_block_ms > 0, "rest_block_ms must be > 0"),
            (self.rest_window_ms >= self.rest_block_ms, "rest_window_ms must be >= rest_block_ms"),
            (0 <= self.rest_quantile <= 100, "rest_quantile must be in [0, 100]"),
            (0 <= self.onset_exponent <= 1, "onset_exponent must be in [0, 1]"),
            (0 <= self.onset_fraction <= 1, "onset_fraction must be in [0, 1]"),
            (1 <= self.onset_min <= self.onset_max, "need 1 <= onset_min <= onset_max"),
            (0 <= self.offset_exponent <= 1, "offset_exponent must be in [0, 1]"),
            (1 <= self.offset_min <= self.onset_min, "need 1 <= offset_min <= onset_min"),
            (1 <= self.refine_ratio <= self.offset_min, "need 1 <= refine_ratio <= offset_min"),
            (0 <= self.refine_quantile <= 100, "refine_quantile must be in [0, 100]"),
            (self.refine_reach_ms >= 0, "refine_reach_ms must be >= 0"),
            (self.sustain_ms > 0, "sustain_ms must be > 0"),
            (self.split_depth >= 1, "split_depth must be >= 1 (1 never splits)"),
            (self.split_smooth_ms > 0, "split_smooth_ms must be > 0"),
            (self.min_contrast >= 1, "min_contrast must be >= 1"),
            (self.min_contraction_ms >= 0, "min_contraction_ms must be >= 0"),
            (self.merge_gap_ms >= 0, "merge_gap_ms must be >= 0"),
            (
                self.max_contraction_ms > self.min_contraction_ms,
                "max_contraction_ms must exceed min_contraction_ms",
            ),
            (0 <= self.min_peak_fraction < 1, "min_peak_fraction must be in [0, 1)"),
            (self.mvc_window_ms > 0, "mvc_window_ms must be > 0"),
            (0 < self.mvc_percentage <= 200, "mvc_percentage must be in (0, 200]"),
            (self.duration_threshold_ms >= 0, "duration_threshold_ms must be >= 0"),
            (self.expected_contractions >= 1, "expected_contractions must be >= 1"),
            (self.welch_segment_ms > 0, "welch_segment_ms must be > 0"),
            (self.fatigue_min_contractions >= 2, "fatigue_min_contractions must be >= 2"),
            (self.fatigue_min_contraction_ms > 0, "fatigue_min_contraction_ms must be > 0"),
            (0 < self.max_masked_share <= 1, "max_masked_share must be in (0, 1]"),
            (0 < self.max_clipped_share <= 1, "max_clipped_share must be in (0, 1]"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise InvalidOptionsError(f"invalid analysis options: {message}")

    def for_channel(self, label: str, unit: str, file_mvc: float | None = None) -> AnalysisOptions:
        """The options one channel is analysed with: its own targets resolved into the
        session-wide fields, and its MVC (if any) in ``mvc``/``mvc_methods``, in ``unit``.

        MVC order: written in the C3D file (``file_mvc``, already in the channel's unit), the
        channel's ``channels`` entry, ``mvc``, the ``"*"`` entry; none: estimated from the
        session itself.
        """
        own = self.channels.get(label, {})
        every = self.channels.get("*", {})

        def pick(name: str) -> Any:
            for source in (own, every):
                if source.get(name) is not None:
                    return source[name]
            return getattr(self, name)

        value: float | None = None
        method = "given"
        if file_mvc is not None and math.isfinite(file_mvc) and file_mvc > 0:
            value, method = float(file_mvc), "c3d_file"
        elif own.get("mvc_value") is not None:
            value = _convert(own["mvc_value"], own.get("mvc_unit"), unit)
            method = own.get("mvc_method", "given")
        elif label in self.mvc:
            value, method = self.mvc[label], self.mvc_methods.get(label, "given")
        elif every.get("mvc_value") is not None:
            value = _convert(every["mvc_value"], every.get("mvc_unit"), unit)
            method = every.get("mvc_method", "given")
        return dataclasses.replace(
            self,
            mvc={label: value} if value is not None else {},
            mvc_methods={label: method} if value is not None else {},
            mvc_percentage=float(pick("mvc_percentage")),
            duration_threshold_ms=float(pick("duration_threshold_ms")),
            expected_contractions=int(pick("expected_contractions")),
        )

    def mvc_method(self, label: str) -> str:
        """Where this channel's MVC comes from (``MVC_METHODS``): a given one's source, or
        ``"session_estimate"`` (relative to the session's own strongest effort)."""
        if label in self.mvc:
            return self.mvc_methods.get(label, "given")
        return "session_estimate"

    def detection_kwargs(self) -> dict[str, float]:
        """Keyword arguments of :func:`emg_core.detect.detect_contractions` (seconds, ratios)."""
        return {
            arg: getattr(self, name) / 1000 if name.endswith("_ms") else getattr(self, name)
            for name, arg in _DETECTION.items()
        }

    def detection_options(self) -> dict[str, float]:
        """The options detection uses, under their own names (for ``processing``)."""
        return {name: getattr(self, name) for name in _DETECTION}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for a process boundary or the result's ``processing``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["mvc"] = dict(self.mvc)
        out["mvc_methods"] = dict(self.mvc_methods)
        out["channels"] = {k: dict(v) for k, v in self.channels.items()}
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


#: option name -> keyword of detect_contractions (``_ms`` options are passed in seconds)
_DETECTION = {
    "rest_block_ms": "rest_block_s",
    "rest_window_ms": "rest_window_s",
    "rest_quantile": "rest_quantile",
    "onset_exponent": "onset_exponent",
    "onset_fraction": "onset_fraction",
    "onset_min": "onset_min",
    "onset_max": "onset_max",
    "offset_exponent": "offset_exponent",
    "offset_min": "offset_min",
    "refine_ratio": "refine_ratio",
    "refine_quantile": "refine_quantile",
    "refine_reach_ms": "refine_reach_s",
    "sustain_ms": "sustain_s",
    "split_depth": "split_depth",
    "split_smooth_ms": "split_smooth_s",
    "min_contrast": "min_contrast",
    "min_contraction_ms": "min_duration_s",
    "merge_gap_ms": "merge_gap_s",
    "max_contraction_ms": "max_duration_s",
    "min_peak_fraction": "min_peak_fraction",
}


#: where a channel's MVC came from, in the order the daemon prefers them; the last is relative
MVC_METHODS = ("c3d_file", "patient_settings", "reference_session", "given", "session_estimate")
#: each given MVC's origin, in words for the therapist (ChannelResult.mvc_source)
MVC_SOURCE = {
    "c3d_file": "written in the recording (C3D file)",
    "patient_settings": "the patient's settings",
    "reference_session": "the patient's MVC reference session",
    "given": "given for this analysis",
}
#: the methods of an MVC handed to the analysis (not estimated by it)
GIVEN_METHODS = MVC_METHODS[:-1]

_TARGET_KEYS = {
    "mvc_value",
    "mvc_unit",
    "mvc_method",
    "mvc_percentage",
    "duration_threshold_ms",
    "expected_contractions",
}
#: volts per unit, for an MVC given in another unit than the channel's
_VOLTS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "μV": 1e-6}


def _channel_targets(label: str, targets: Any) -> dict[str, Any]:
    """One ``channels`` entry, checked like the session-wide fields it overrides."""
    if not isinstance(targets, Mapping):
        raise InvalidOptionsError(f"the targets of channel {label!r} must be a mapping")
    out = dict(targets)
    unknown = sorted(set(out) - _TARGET_KEYS)
    if unknown:
        raise InvalidOptionsError(
            f"unknown targets for channel {label!r}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_TARGET_KEYS))})"
        )
    value = out.get("mvc_value")
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidOptionsError(
            f"the MVC given for channel {label!r} must be a positive number, not {value!r}"
        )
    if out.get("mvc_unit") is not None and out["mvc_unit"] not in _VOLTS:
        raise InvalidOptionsError(
            f"the MVC unit of channel {label!r} must be one of V, mV, uV, not {out['mvc_unit']!r}"
        )
    if out.get("mvc_method") is not None and out["mvc_method"] not in GIVEN_METHODS:
        raise InvalidOptionsError(
            f"the MVC method of channel {label!r} must be one of {', '.join(GIVEN_METHODS)}, "
            f"not {out['mvc_method']!r}"
        )
    pct, dur, exp = (
        out.get("mvc_percentage"),
        out.get("duration_threshold_ms"),
        out.get("expected_contractions"),
    )
    if pct is not None and not (isinstance(pct, int | float) and 0 < pct <= 200):
        raise InvalidOptionsError(f"mvc_percentage of channel {label!r} must be in (0, 200]")
    if dur is not None and not (isinstance(dur, int | float) and 0 <= dur < math.inf):
        raise InvalidOptionsError(f"duration_threshold_ms of channel {label!r} must be >= 0")
    if exp is not None and not (isinstance(exp, int) and not isinstance(exp, bool) and exp >= 1):
        raise InvalidOptionsError(
            f"expected_contractions of channel {label!r} must be an integer >= 1"
        )
    return out


def _convert(value: float, unit: str | None, to: str) -> float:
    """An MVC in ``unit`` expressed in the channel's unit ``to`` (as given when either is not a
    volt unit)."""
    if unit is None or unit not in _VOLTS or to not in _VOLTS:
        return float(value)
    return float(value) * _VOLTS[unit] / _VOLTS[to]


class _FrozenDict(dict[str, Any]):
    """A dict that refuses changes (keeps ``AnalysisOptions`` effectively immutable)."""

    def _readonly(self, *args: object, **kwargs: object) -> None:
        raise TypeError("AnalysisOptions.mvc is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[type[_FrozenDict], tuple[dict[str, Any]]]:
        # pickle through the constructor: the default path would call the refused __setitem__
        return (_FrozenDict, (dict(self),))


__all__ = ["GIVEN_METHODS", "MVC_METHODS", "MVC_SOURCE", "AnalysisOptions"]
