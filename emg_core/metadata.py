"""What the GHOSTLY game wrote into its C3D files: game, level, score, players, recording time.

The game stores these in the ``INFO`` and ``SUBJECTS`` parameter groups. They come from a tablet
and a user, so every field is optional and a value of the wrong type is dropped rather than
trusted: metadata never fails an analysis.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .c3d import C3DFile, first_number
from .results import GameMetadata

_NAME_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})[_-](\d{2})-(\d{2})-(\d{2})")


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    number = first_number(value)
    if number is None:
        return None
    return str(int(number)) if float(number).is_integer() else str(number)


def game_metadata(c3d: C3DFile) -> GameMetadata:
    """What the GHOSTLY game wrote in ``INFO`` and ``SUBJECTS`` (every field optional).

    Values of the wrong type are dropped rather than trusted: metadata never fails an analysis.
    """
    level = first_number(c3d.param("INFO", "GAME_LEVEL"))
    if level is None and (text := _text(c3d.param("INFO", "GAME_LEVEL"))):
        level = _to_float(text)
    duration = first_number(c3d.param("INFO", "DURATION"))
    if duration is None and (text := _text(c3d.param("INFO", "DURATION"))):
        duration = _to_float(text)
    score = first_number(c3d.param("SUBJECTS", "GAME_SCORE"))
    if score is None and (text := _text(c3d.param("SUBJECTS", "GAME_SCORE"))):
        score = _to_float(text)
    return GameMetadata(
        game_name=_text(c3d.param("INFO", "GAME_NAME")),
        game_level=int(level) if level is not None and abs(level) < 2**31 else None,
        game_duration=duration,
        therapist_id=_text(c3d.param("INFO", "THERAPIST_ID")),
        player_name=_text(c3d.param("SUBJECTS", "PLAYER_NAME")),
        game_score=score,
    )


def _to_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def recorded_at(c3d: C3DFile, name: str | None = None) -> datetime | None:
    """When the recording was made, from ``INFO:TIME``, ``TRIAL:DATE``/``TIME`` or the file name.

    The game writes the tablet's wall-clock time without a zone; it is returned labelled UTC so
    that it stores unchanged in a ``timestamptz`` column.
    """
    info_time = c3d.param("INFO", "TIME")
    if (
        isinstance(info_time, np.ndarray)
        and info_time.size >= 5
        and (when := _datetime(*info_time.ravel()[:6])) is not None
    ):
        return when
    date, time = c3d.param("TRIAL", "DATE"), c3d.param("TRIAL", "TIME")
    if isinstance(date, np.ndarray) and date.size >= 3:
        parts = list(date.ravel()[:3])
        if isinstance(time, np.ndarray):
            parts += list(time.ravel()[:3])
        if (when := _datetime(*parts)) is not None:
            return when
    if name and (m := _NAME_TIME.search(os.path.basename(name))):
        return _datetime(*(int(g) for g in m.groups()))
    return None


def _datetime(*parts: Any) -> datetime | None:
    try:
        year, month, day, *clock = (int(p) for p in parts)  # fewer than 3: ValueError
        hour, minute, second = (*clock, 0, 0, 0)[:3]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (ValueError, TypeError, OverflowError):
        return None


def written_mvc(c3d: C3DFile) -> dict[str, float]:
    """MVC values the recording carries, by analog channel label: ``ANALOG:MVC``, one value per
    analog channel in that channel's unit, in the order of ``ANALOG:LABELS``. Values that are
    not positive and finite mean "none" (a game that knows some channels' MVC only)."""
    values = c3d.param("ANALOG", "MVC")
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "fiu":
        return {}
    flat = values.ravel().astype(float)
    return {
        label: float(v)
        for label, v in zip(c3d.labels, flat, strict=False)
        if np.isfinite(v) and v > 0
    }


__all__ = ["game_metadata", "recorded_at", "written_mvc"]
