"""emg_core: pure EMG analysis of C3D recordings.

Bytes or a path in, frozen typed results out; no database, no asyncio, no logging
configuration. The entry point is :func:`analyze`.
"""

from .analysis import ANALYSIS_VERSION, AnalysisOptions, analyze
from .errors import (
    C3DFormatError,
    EmgError,
    InvalidOptionsError,
    NoEmgChannelsError,
    SamplingRateError,
    SignalQualityError,
)
from .results import ChannelResult, Contraction, GameMetadata, SessionResult

__all__ = [
    "ANALYSIS_VERSION",
    "AnalysisOptions",
    "C3DFormatError",
    "ChannelResult",
    "Contraction",
    "EmgError",
    "GameMetadata",
    "InvalidOptionsError",
    "NoEmgChannelsError",
    "SamplingRateError",
    "SessionResult",
    "SignalQualityError",
    "analyze",
]
