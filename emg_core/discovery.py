"""Which analog channels of a C3D file are EMG, and which game channel hints at each.

GHOSTLY files name their channels ``CHn Raw`` (the sensor) and ``CHn activated`` (the game's
causal on/off, a hint only); lab systems name theirs ``...EMG...`` or after the muscle. Force
plate channels are never EMG, whatever their label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .c3d import C3DFile
from .errors import NoEmgChannelsError

_GHOSTLY_RAW = re.compile(r"^\s*CH\s*(\d+)\s*[ _-]?\s*raw\s*$", re.IGNORECASE)
_GHOSTLY_ACTIVATED = re.compile(r"^\s*CH\s*(\d+)\s*[ _-]?\s*activated\s*$", re.IGNORECASE)
# "EMG" not glued to other letters: "Biceps.EMG4", "Sensor 1.IM EMG1", "EMG 3"; not "Voltage.1"
_EMG_LABEL = re.compile(r"(?<![A-Za-z])EMG(?![A-Za-z])", re.IGNORECASE)
_VOLT_UNITS = {"v", "mv", "uv", "µv", "μv"}
# words naming skeletal muscles (and their usual abbreviations in lab set-ups)
_MUSCLE = re.compile(
    r"rectus|femoris|vast(us|\.)|semiten|semimem|biceps|triceps|tibialis|gastroc|soleus|"
    r"glute|deltoid|delt_|trapez|trap_|pector|latissimus|erector|multifid|oblique|abdomin|"
    r"brachi|flexor|extensor|adductor|abductor|sartorius|peroneus|fibularis|hamstring|"
    r"quadriceps|infraspin|supraspin|subscap|rhomboid|serratus|masseter|temporalis|"
    r"sternocleido|splenius|iliopsoas|psoas|gracilis|tensor|plantaris|popliteus|"
    r"pronator|supinator|opponens|interosse|lumbrical|thenar|muscle",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class EmgSelection:
    """Which analog channels are EMG, and how they were recognised.

    Attributes
    ----------
    indices : tuple of int
        Analog channel indices of the EMG channels, in file order.
    activated : mapping of int to int
        For GHOSTLY files: EMG channel index -> index of the game's ``CHn activated`` channel.
    method : str
        ``"include_pattern"``, ``"ghostly"``, ``"emg_label"`` or ``"muscle_name"``.
    """

    indices: tuple[int, ...]
    activated: Mapping[int, int]
    method: str


def force_plate_channels(c3d: C3DFile) -> set[int]:
    """0-based indices of the analog channels listed under ``FORCE_PLATFORM:CHANNEL``."""
    value = c3d.param("FORCE_PLATFORM", "CHANNEL")
    if not isinstance(value, np.ndarray) or not value.size:
        return set()
    # float channel numbers can be NaN or infinite: those name no channel
    return {int(v) - 1 for v in value.ravel() if np.isfinite(v) and 1 <= int(v) <= c3d.n_channels}


def discover_emg(c3d: C3DFile, include: str | None = None) -> EmgSelection:
    """Find the EMG channels of a C3D file.

    Rules, first match wins:

    1. ``include`` (a case-insensitive regular expression searched in each label) selects exactly
       the channels whose label matches, whatever their unit;
    2. GHOSTLY layout: ``CHn Raw`` channels, each paired with its ``CHn activated`` hint;
    3. labels containing the token ``EMG`` (Vicon/Delsys ``Biceps.EMG4``, ``Sensor 1.IM EMG1``,
       Qualisys ``EMG 1``);
    4. channels named after a muscle whose unit is a voltage (V, mV, uV), e.g. BTS's
       ``Left Rectus femoris`` in mV.

    Channels listed under ``FORCE_PLATFORM:CHANNEL`` are never EMG in rules 2-4.

    Parameters
    ----------
    c3d : C3DFile
        The opened file.
    include : str, optional
        Regular expression that overrides the automatic rules.

    Returns
    -------
    EmgSelection

    Raises
    ------
    NoEmgChannelsError
        No channel qualifies (the message lists the labels seen).
    """
    labels = c3d.labels
    if include:
        try:
            pattern = re.compile(include, re.IGNORECASE)
        except re.error as exc:
            raise NoEmgChannelsError(
                f"the EMG include pattern {include!r} is not a valid regular expression ({exc})"
            ) from None
        chosen = tuple(i for i, label in enumerate(labels) if pattern.search(label))
        if not chosen:
            raise NoEmgChannelsError(
                f"no analog channel label matches the include pattern {include!r} "
                f"(labels: {_label_list(labels)})"
            )
        return EmgSelection(chosen, {}, "include_pattern")

    plates = force_plate_channels(c3d)
    candidates = [i for i in range(len(labels)) if i not in plates]

    raw: dict[int, int] = {}  # n of CHn -> channel index
    activated: dict[int, int] = {}
    for i in candidates:
        if m := _GHOSTLY_RAW.match(labels[i]):
            raw.setdefault(int(m.group(1)), i)
        elif m := _GHOSTLY_ACTIVATED.match(labels[i]):
            activated.setdefault(int(m.group(1)), i)
    if raw:
        pairs = {i: activated[n] for n, i in raw.items() if n in activated}
        return EmgSelection(tuple(sorted(raw.values())), pairs, "ghostly")

    by_label = tuple(i for i in candidates if _EMG_LABEL.search(labels[i]))
    if by_label:
        return EmgSelection(by_label, {}, "emg_label")

    by_muscle = tuple(
        i
        for i in candidates
        if _MUSCLE.search(labels[i]) and c3d.units[i].strip().lower() in _VOLT_UNITS
    )
    if by_muscle:
        return EmgSelection(by_muscle, {}, "muscle_name")

    raise NoEmgChannelsError(
        f"found no EMG channel among the file's {len(labels)} analog channels "
        f"(labels: {_label_list(labels)}); EMG channels are recognised by 'CHn Raw', an 'EMG' "
        "token or a muscle name in a volt unit, or pass an include pattern"
    )


def _label_list(labels: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(repr(s) for s in labels[:limit])
    return shown + (f", ... {len(labels) - limit} more" if len(labels) > limit else "")


__all__ = ["EmgSelection", "discover_emg", "force_plate_channels"]
