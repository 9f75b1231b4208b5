"""The C3D file format: bytes in, parameters and analog channels out, every length checked.

This is a small C3D reader of our own rather than ``ezc3d``'s: it reads from bytes (the daemon
downloads objects into memory), it is an order of magnitude faster on long recordings (the
analog block is one ``numpy.frombuffer`` view, converted channel by channel), it handles more
than 65535 frames, and it checks what ``ezc3d`` does not: a file whose header promises more data
than it holds is rejected instead of being read "successfully" with missing samples.

Format reference: the C3D User Guide (c3d.org), sections "The header section", "The parameter
section" and "The 3D point and analog data section".

What the channels mean is decided elsewhere: which are EMG in ``emg_core.discovery``, what the
GHOSTLY game wrote (level, score, recording time) in ``emg_core.metadata``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import C3DFormatError, NoEmgChannelsError, SamplingRateError

BLOCK = 512
#: processor type byte in the parameter section header -> numeric byte order
_PROCESSORS = {84: "<", 85: "<", 86: ">"}  # Intel, DEC (VAX floats), MIPS/SGI
_PROCESSOR_NAMES = {84: "intel", 85: "dec", 86: "mips"}
#: hostile headers may promise absurd sizes; nothing real comes close to this
_MAX_PARAMETER_VALUES = 1_000_000

Source = bytes | bytearray | memoryview | str | os.PathLike[str]


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True, slots=True)
class C3DFile:
    """An opened C3D file: its parameters and a lazy view of the analog samples.

    Attributes
    ----------
    labels, units, descriptions : tuple of str
        ``ANALOG:LABELS`` / ``UNITS`` / ``DESCRIPTIONS``, one per analog channel (blank-padded
        entries stripped; missing entries become ``"Analog <n>"`` / ``""``).
    rate : float
        Analog sampling rate in Hz (``ANALOG:RATE``); ``nan`` when the file gives none.
    n_samples : int
        Samples per analog channel.
    parameters : mapping
        ``{GROUP: {PARAMETER: value}}`` with upper-case names; values are ``str``,
        ``list[str]`` or numpy arrays.
    processor : str
        ``"intel"``, ``"dec"`` or ``"mips"``.
    """

    labels: tuple[str, ...]
    units: tuple[str, ...]
    descriptions: tuple[str, ...]
    rate: float
    n_samples: int
    parameters: Mapping[str, Mapping[str, Any]]
    processor: str
    _raw: np.ndarray = field(repr=False)  # (n_samples, n_channels) view on the file's bytes
    _scale: np.ndarray = field(repr=False)
    _offset: np.ndarray = field(repr=False)
    _dec: bool = field(repr=False, default=False)

    @property
    def n_channels(self) -> int:
        return len(self.labels)

    @property
    def duration_s(self) -> float:
        """Recording length in seconds (``nan`` without a rate)."""
        return self.n_samples / self.rate if self.rate > 0 else float("nan")

    def param(self, group: str, name: str, default: Any = None) -> Any:
        """``parameters[group][name]`` or ``default`` when either is absent."""
        return self.parameters.get(group.upper(), {}).get(name.upper(), default)

    def channel(self, index: int) -> np.ndarray:
        """One analog channel in its physical unit, as a new contiguous float64 array.

        Parameters
        ----------
        index : int
            Channel index into ``labels``.

        Returns
        -------
        ndarray, shape (n_samples,), float64
            ``(raw - ANALOG:OFFSET) * ANALOG:SCALE * ANALOG:GEN_SCALE``.
        """
        raw = self._raw[:, index]
        if self._dec:
            raw = _dec_to_ieee(raw)
        # A hostile file's samples or scale can be non-finite (a signalling NaN even warns on the
        # cast to float64); the signal checks downstream reject those with a sentence, so
        # numpy's warning would only be noise on stderr.
        with np.errstate(invalid="ignore", over="ignore"):
            out = raw.astype(np.float64)
            if self._offset[index] != 0.0:
                out -= self._offset[index]
            if self._scale[index] != 1.0:
                out *= self._scale[index]
        return out

    def channels(self, indices: list[int] | tuple[int, ...]) -> np.ndarray:
        """Several channels stacked as ``(len(indices), n_samples)`` float64."""
        out = np.empty((len(indices), self.n_samples), dtype=np.float64)
        for row, index in enumerate(indices):
            out[row] = self.channel(index)
        return out


def read_c3d(source: Source) -> C3DFile:
    """Open a C3D file from bytes or a path and validate its structure.

    Parameters
    ----------
    source : bytes, bytearray, memoryview, str or os.PathLike
        The file's content, or a path to it.

    Returns
    -------
    C3DFile
        Parameters plus a lazy view of the analog samples (no sample is converted yet).

    Raises
    ------
    C3DFormatError
        The bytes are not C3D, are inconsistent, or hold less data than the header promises.
    """
    buf = _load(source)
    n = len(buf)
    if n == 0:
        raise C3DFormatError("the file is empty (0 bytes), not a C3D recording")
    if n < BLOCK:
        raise C3DFormatError(
            f"not a C3D file: {n} bytes is shorter than the 512-byte header "
            "every C3D file starts with"
        )
    if buf[1] != 0x50:
        raise C3DFormatError(
            "not a C3D file: the header's second byte is "
            f"0x{buf[1]:02X} where every C3D file has 0x50"
        )
    param_start = (buf[0] - 1) * BLOCK
    if buf[0] < 1 or param_start + 4 > n:
        raise C3DFormatError(
            f"not a readable C3D file: the parameter section is said to start at block {buf[0]}, "
            f"beyond the file's {n} bytes"
        )
    proc_byte = buf[param_start + 3]
    if proc_byte not in _PROCESSORS:
        raise C3DFormatError(
            f"not a readable C3D file: unknown processor type {proc_byte} "
            "(C3D knows 84 Intel, 85 DEC, 86 MIPS)"
        )
    endian = _PROCESSORS[proc_byte]
    dec = proc_byte == 85
    header = _parse_header(buf, endian, dec)
    n_param_blocks = buf[param_start + 2]
    param_end = min(n, param_start + max(n_param_blocks, 1) * BLOCK)
    try:
        params = _parse_parameters(buf, param_start + 4, param_end, endian, dec)
    except (struct.error, IndexError, ValueError, UnicodeError) as exc:
        raise C3DFormatError(
            f"not a readable C3D file: damaged parameter section ({exc})"
        ) from None
    return _open_data(buf, header, params, endian, dec, _PROCESSOR_NAMES[proc_byte])


def _load(source: Source) -> memoryview:
    if isinstance(source, bytes | bytearray | memoryview):
        return memoryview(source).cast("B")
    if isinstance(source, str | os.PathLike):
        try:
            return memoryview(Path(source).read_bytes())
        except IsADirectoryError:
            raise C3DFormatError(f"cannot read {os.fspath(source)}: it is a directory") from None
        except OSError as exc:
            raise C3DFormatError(
                f"cannot read {os.fspath(source)}: {exc.strerror or exc}"
            ) from None
    raise TypeError(f"source must be bytes or a path, not {type(source).__name__}")


def _parse_header(buf: memoryview, endian: str, dec: bool) -> dict[str, Any]:
    def word(k: int) -> int:  # 1-based 16-bit word number, as the C3D guide counts them
        return int(struct.unpack_from(endian + "H", buf, 2 * (k - 1))[0])

    def real(k: int) -> float:
        return _float(bytes(buf[2 * (k - 1) : 2 * (k - 1) + 4]), endian, dec)

    return {
        "points": word(2),
        "analog_words": word(3),
        "first_frame": word(4),
        "last_frame": word(5),
        "scale": real(7),
        "data_start": word(9),
        "analog_per_frame": word(10),
        "frame_rate": real(11),
    }


def _float(b: bytes, endian: str, dec: bool) -> float:
    if dec:
        return float(_dec_to_ieee(np.frombuffer(b, dtype="<f4"))[0])
    return float(struct.unpack(endian + "f", b)[0])


def _dec_to_ieee(values: np.ndarray) -> np.ndarray:
    """Convert DEC (VAX F) floats, read as little-endian float32, to IEEE float32.

    A VAX F float stores its two 16-bit halves in the opposite order and its exponent with a bias
    two higher than IEEE's; swapping the halves and dividing by 4 gives the IEEE value.
    """
    u = np.ascontiguousarray(values).view("<u4")
    swapped = ((u >> np.uint32(16)) | (u << np.uint32(16))).astype("<u4")
    return swapped.view("<f4") / np.float32(4.0)


def _parse_parameters(
    buf: memoryview, pos: int, end: int, endian: str, dec: bool
) -> dict[str, dict[str, Any]]:
    group_names: dict[int, str] = {}
    raw_params: list[tuple[int, str, Any]] = []
    seen = 0
    while pos + 2 <= end:
        name_len = struct.unpack_from("b", buf, pos)[0]
        gid = struct.unpack_from("b", buf, pos + 1)[0]
        if name_len == 0:
            break
        name_len = abs(name_len)
        name_end = pos + 2 + name_len
        if name_end + 2 > end:
            break
        name = bytes(buf[pos + 2 : name_end]).decode("latin-1").strip().upper()
        offset = struct.unpack_from(endian + "h", buf, name_end)[0]
        body = name_end + 2
        if gid < 0:
            group_names[-gid] = name
        elif gid > 0:
            raw_params.append((gid, name, _parse_value(buf, body, end, endian, dec)))
        seen += 1
        if offset <= 0 or seen > 100_000:
            break
        nxt = name_end + offset
        if nxt <= pos:
            break
        pos = nxt
    params: dict[str, dict[str, Any]] = {name: {} for name in group_names.values()}
    for gid, name, value in raw_params:
        group = group_names.get(gid)
        if group is not None:
            params[group][name] = value
    return params


def _parse_value(buf: memoryview, pos: int, end: int, endian: str, dec: bool) -> Any:
    dtype = struct.unpack_from("b", buf, pos)[0]
    ndim = buf[pos + 1]
    dims = tuple(buf[pos + 2 : pos + 2 + ndim])
    if len(dims) != ndim:
        raise ValueError("parameter dimensions run past the section")
    data = pos + 2 + ndim
    count = 1
    for d in dims:
        count *= d
    if count > _MAX_PARAMETER_VALUES:
        raise ValueError(f"a parameter claims {count} values")
    size = abs(dtype) * count
    if dtype not in (-1, 1, 2, 4) or data + size > end:
        raise ValueError("parameter data run past the section")
    raw = bytes(buf[data : data + size])
    if dtype == -1:
        # NUL pads C strings; inside one it is damage, and PostgreSQL text and jsonb refuse it
        raw = raw.replace(b"\x00", b" ")
        if ndim <= 1:
            return raw.decode("latin-1").rstrip(" ")
        width = dims[0]
        if width == 0:  # zero-width strings: as many blanks as the other dimensions say
            n_strings = 1
            for d in dims[1:]:
                n_strings *= d
            # no bytes back these, so the byte-count checks above cannot bound them
            if n_strings > _MAX_PARAMETER_VALUES:
                raise ValueError(f"a parameter claims {n_strings} blank strings")
            return [""] * n_strings
        return [raw[i : i + width].decode("latin-1").strip(" ") for i in range(0, len(raw), width)]
    if dtype == 1:
        arr = np.frombuffer(raw, dtype=np.int8).astype(np.int64)
    elif dtype == 2:
        arr = np.frombuffer(raw, dtype=endian + "i2").astype(np.int64)
    else:
        arr = np.frombuffer(raw, dtype=endian + "f4")
        arr = (_dec_to_ieee(arr) if dec else arr).astype(np.float64)
    return arr.reshape(dims, order="F") if ndim > 1 else arr


def first_number(value: Any) -> float | None:
    """The first value of a numeric parameter when it is finite, else ``None`` (strings too)."""
    if isinstance(value, np.ndarray) and value.size:
        v = float(value.ravel()[0])
        return v if np.isfinite(v) else None
    return None


def _uint16(value: float | None) -> int | None:
    # int16 parameters that hold counts above 32767 (frames, USED) wrap negative
    return None if value is None else int(value) & 0xFFFF


def _open_data(
    buf: memoryview,
    header: dict[str, Any],
    params: dict[str, dict[str, Any]],
    endian: str,
    dec: bool,
    processor: str,
) -> C3DFile:
    point = params.get("POINT", {})
    analog = params.get("ANALOG", {})

    n_points = _uint16(first_number(point.get("USED")))
    n_points = header["points"] if n_points is None else n_points
    n_analog = _uint16(first_number(analog.get("USED")))
    scale = first_number(point.get("SCALE"))
    scale = header["scale"] if scale is None else scale
    is_float = scale is not None and scale < 0
    point_rate = first_number(point.get("RATE")) or header["frame_rate"]
    analog_rate = first_number(analog.get("RATE"))

    per_frame = header["analog_per_frame"]
    if n_analog is None:
        n_analog = header["analog_words"] // per_frame if per_frame else 0
    if analog_rate and point_rate and point_rate > 0 and np.isfinite(point_rate):
        ratio = analog_rate / point_rate
        if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1:
            per_frame = round(ratio)
    if n_analog == 0:
        raise NoEmgChannelsError("the C3D file holds no analog channels, so no EMG to analyse")
    if per_frame <= 0:
        raise C3DFormatError(
            "not a readable C3D file: it has analog channels but zero analog samples per frame"
        )

    data_start = _uint16(first_number(point.get("DATA_START"))) or header["data_start"]
    n_frames = _frame_count(header, params)
    word = 4 if is_float else 2
    frame_words = n_points * 4 + n_analog * per_frame
    offset = (data_start - 1) * BLOCK
    if data_start < 1 or offset > len(buf):
        raise C3DFormatError(
            f"not a readable C3D file: data are said to start at block {data_start}, "
            f"beyond the file's {len(buf)} bytes"
        )
    promised = n_frames * frame_words * word
    present = len(buf) - offset
    if promised > present:
        frames_present = present // (frame_words * word) if frame_words else 0
        raise C3DFormatError(
            f"the C3D file is truncated: its header promises {n_frames} frames "
            f"({promised} bytes of samples) but only {present} bytes ({frames_present} frames, "
            f"{100 * present / promised:.0f}%) are present"
        )
    if n_frames == 0:
        raise C3DFormatError("the C3D file holds no frames: there are no samples to analyse")

    sample_dtype = np.dtype(endian + ("f4" if is_float else "i2"))
    fmt = analog.get("FORMAT")
    unsigned = not is_float and isinstance(fmt, str) and fmt.strip().upper() == "UNSIGNED"
    if unsigned:
        sample_dtype = np.dtype(endian + "u2")
    if dec and is_float:  # DEC integer samples are plain little-endian int16
        sample_dtype = np.dtype("<f4")
    frames = np.frombuffer(buf, dtype=sample_dtype, count=n_frames * frame_words, offset=offset)
    frames = frames.reshape(n_frames, frame_words)
    # within a frame, analog samples are stored sample-major: s0(ch0..chN) s1(ch0..chN) ...
    raw = frames[:, n_points * 4 :].reshape(n_frames * per_frame, n_analog)

    gen_scale = first_number(analog.get("GEN_SCALE")) or 1.0
    ch_scale = _per_channel(analog.get("SCALE"), n_analog, 1.0) * gen_scale
    ch_offset = _per_channel(analog.get("OFFSET"), n_analog, 0.0)
    if unsigned:
        # OFFSET is stored as a signed 16-bit parameter; with offset-binary samples it means the
        # same bits read unsigned (C3D User Guide): 32768 arrives as -32768
        ch_offset = np.where(ch_offset < 0, ch_offset + 65536.0, ch_offset)
    labels = _unique(_strings(analog.get("LABELS"), n_analog, "Analog {}"))
    units = _strings(analog.get("UNITS"), n_analog, "")
    descriptions = _strings(analog.get("DESCRIPTIONS"), n_analog, "")
    rate = float(analog_rate) if analog_rate and analog_rate > 0 else float("nan")
    return C3DFile(
        labels=labels,
        units=units,
        descriptions=descriptions,
        rate=rate,
        n_samples=raw.shape[0],
        parameters=params,
        processor=processor,
        _raw=raw,
        _scale=ch_scale,
        _offset=ch_offset,
        _dec=dec and is_float,
    )


def _frame_count(header: dict[str, Any], params: dict[str, dict[str, Any]]) -> int:
    trial = params.get("TRIAL", {})
    start, end = trial.get("ACTUAL_START_FIELD"), trial.get("ACTUAL_END_FIELD")
    if isinstance(start, np.ndarray) and isinstance(end, np.ndarray) and start.size and end.size:
        # two 16-bit words (low, high) make one 32-bit frame number, for files > 65535 frames
        def join(words: np.ndarray) -> int | None:
            head = words.ravel()[:2]
            if not np.all(np.isfinite(head)):  # float words can be NaN or infinite
                return None
            w = [int(v) & 0xFFFF for v in head] + [0]
            return w[0] + (w[1] << 16)

        first, last = join(start), join(end)
        if first is not None and last is not None and last >= first >= 0:
            return last - first + 1
    long_frames = first_number(params.get("POINT", {}).get("LONG_FRAMES"))
    if long_frames and long_frames > 0:
        return int(long_frames)
    counted = (
        header["last_frame"] - header["first_frame"] + 1
        if header["last_frame"] >= header["first_frame"]
        else 0
    )
    frames_param = params.get("POINT", {}).get("FRAMES")
    if isinstance(frames_param, np.ndarray) and frames_param.size:
        value = frames_param.ravel()[0]
        if np.isfinite(value):  # a NaN or infinite float count says nothing
            as_count = int(value) if frames_param.dtype.kind == "f" else int(value) & 0xFFFF
            counted = max(counted, as_count)
    return counted


def _unique(labels: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated labels become ``"EMG 1 (2)"``, ``"EMG 1 (3)"``: results are keyed by label.

    One result row per channel name (``unique(session_id, name)``), so two channels called
    ``EMG 1`` would make a result that cannot be stored.
    """
    used: set[str] = set()
    last: dict[str, int] = {}  # last suffix tried per label: linear even for 65535 repeats
    out = []
    for label in labels:
        name = label
        while name in used:
            last[label] = last.get(label, 1) + 1
            name = f"{label} ({last[label]})".strip()
        used.add(name)
        out.append(name)
    return tuple(out)


def _per_channel(value: Any, n: int, default: float) -> np.ndarray:
    out = np.full(n, default, dtype=np.float64)
    if isinstance(value, np.ndarray) and value.size:
        flat = value.ravel().astype(np.float64)[:n]
        out[: flat.size] = flat
    return out


def _strings(value: Any, n: int, fallback: str) -> tuple[str, ...]:
    # only strings name channels: LABELS/UNITS stored as numbers count as absent
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    items = [str(s).strip() for s in items][:n]
    items += [fallback.format(i + 1) for i in range(len(items), n)]
    return tuple(items)


def check_rate(c3d: C3DFile, top_cutoff_hz: float) -> float:
    """The analog rate, validated against the band-pass filter's top cut-off.

    Raises
    ------
    SamplingRateError
        The file gives no positive rate, or the rate is below twice ``top_cutoff_hz``.
    """
    rate = c3d.rate
    if not np.isfinite(rate) or rate <= 0:
        raise SamplingRateError(
            "the C3D file gives no analog sampling rate (ANALOG:RATE), so times cannot be computed"
        )
    if rate < 2 * top_cutoff_hz:
        raise SamplingRateError(
            f"the analog rate {rate:g} Hz is below twice the band-pass top cut-off "
            f"({top_cutoff_hz:g} Hz): surface EMG needs at least {2 * top_cutoff_hz:g} Hz here; "
            "lower the top cut-off to analyse this file"
        )
    return float(rate)


__all__ = [
    "BLOCK",
    "C3DFile",
    "Source",
    "check_rate",
    "first_number",
    "read_c3d",
]
