"""Typed errors of the analysis, each carrying one readable sentence.

Every error the analysis raises on bad input is an :class:`EmgError`; ``str(err)`` and
``err.reason`` are the same human sentence, fit for a CLI's stderr line or a session's ``error``
column. They are all *permanent*: analysing the same bytes again gives the same error, so a job
runner should fail the job at once instead of retrying it.
"""

from __future__ import annotations


class EmgError(Exception):
    """Base of every analysis error; ``reason`` is the readable sentence."""

    #: stable machine-readable name, e.g. for metrics labels
    code = "emg_error"
    #: the same input always fails the same way: retrying is pointless
    permanent = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class C3DFormatError(EmgError):
    """The bytes are not a readable C3D file (garbage, empty, truncated, inconsistent)."""

    code = "c3d_format"


class NoEmgChannelsError(EmgError):
    """The file is a valid C3D file but none of its analog channels is EMG."""

    code = "no_emg_channels"


class SamplingRateError(EmgError):
    """The analog rate is missing or too low for the requested band-pass filter."""

    code = "sampling_rate"


class SignalQualityError(EmgError):
    """The EMG samples cannot be analysed (non-finite values, every channel flat, too short)."""

    code = "signal_quality"


class InvalidOptionsError(EmgError, ValueError):
    """Analysis options that contradict each other or are out of range."""

    code = "invalid_options"


__all__ = [
    "C3DFormatError",
    "EmgError",
    "InvalidOptionsError",
    "NoEmgChannelsError",
    "SamplingRateError",
    "SignalQualityError",
]
