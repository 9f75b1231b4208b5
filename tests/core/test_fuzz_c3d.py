"""Mutation fuzzing of the C3D reader and the analysis on real recordings.

Files come from tablets and users, so hostile bytes are ordinary input. Whatever a file holds,
``emg_core.analyze`` must either return a result the database can store (finite numbers where
the columns need them, rates in [0, 1]) or raise an ``EmgError`` with a readable sentence: never
another exception, never a hang, never a multi-GB allocation.

Inputs: small synthetic GHOSTLY recordings and, when the shared C3D folder is mounted, the three
vendor files. Mutations: byte flips, truncations at the format's boundaries, extreme values in
header and parameter fields, damaged parameter records, rebuilt parameter sections with missing,
duplicated or retyped groups and parameters, and runs of extreme samples.

The default run is short (``FUZZ_EXAMPLES`` = 10 per test and input, 350 in all, a few seconds);
``EMGD_FUZZ_EXAMPLES=300`` runs a long session (~10,000 examples, a few minutes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emg_core import EmgError, SessionResult, analyze
from emg_core.c3d import read_c3d
from emg_core.synthetic import ghostly_recording

from .helpers import VENDOR_DIR

FUZZ_EXAMPLES = int(os.environ.get("EMGD_FUZZ_EXAMPLES") or 10)
#: hypothesis fails an example slower than this (a clean analysis of these inputs takes ~50 ms)
DEADLINE_S = 5.0
#: an example still running after this is a hang: SIGALRM turns it into a failure
HARD_LIMIT_S = 30.0
PEAK_LIMIT_BYTES = 200 * 1024 * 1024

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=timedelta(seconds=DEADLINE_S),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

SYNTHETIC = ("ghostly-1s-1000Hz", "ghostly-2.5s-2000Hz")
VENDOR = ("Vicon.c3d", "BTS.c3d", "Qualisys.c3d")
SOURCES = [pytest.param(name, id=name) for name in SYNTHETIC + VENDOR]


@functools.cache
def _source_bytes(name: str) -> bytes | None:
    if name == "ghostly-1s-1000Hz":
        return ghostly_recording(seed=3, duration_s=1.0, rate=1000.0)[0]
    if name == "ghostly-2.5s-2000Hz":
        return ghostly_recording(seed=4, duration_s=2.5, rate=2000.0)[0]
    path = VENDOR_DIR / name
    return path.read_bytes() if path.exists() else None


def source(name: str) -> bytes:
    content = _source_bytes(name)
    if content is None:
        pytest.skip(
            f"vendor sample {VENDOR_DIR / name} is absent (the shared C3D folder is not mounted)"
        )
    return content


# --------------------------------------------------------------------------------------------
# the layout of a valid file, and a writer for rebuilt parameter sections


@dataclass
class Entry:
    """One record of the parameter section: a group (gid < 0) or a parameter (gid > 0)."""

    gid: int
    name: bytes
    locked: bool = False
    description: bytes = b""
    dtype: int = 0
    dims: tuple[int, ...] = ()
    data: bytes = b""
    # where the record sits in the file it was parsed from
    start: int = 0  # the name-length byte
    pointer: int = 0  # the int16 offset to the next record
    body: int = 0  # the dtype byte (parameters)

    @property
    def is_group(self) -> bool:
        return self.gid < 0

    @property
    def data_at(self) -> int:
        return self.body + 2 + len(self.dims)


@dataclass
class Layout:
    endian: str
    param_start: int  # byte offset of the parameter section
    data_start: int  # byte offset of the samples
    entries: list[Entry]

    @classmethod
    def parse(cls, buf: bytes) -> Layout:
        param_start = (buf[0] - 1) * 512
        endian = ">" if buf[param_start + 3] == 86 else "<"
        entries, pos = [], param_start + 4
        while True:
            name_len, gid = struct.unpack_from("bb", buf, pos)
            if name_len == 0:
                break
            name_end = pos + 2 + abs(name_len)
            (offset,) = struct.unpack_from(endian + "h", buf, name_end)
            entry = Entry(gid, buf[pos + 2 : name_end], name_len < 0, start=pos, pointer=name_end)
            entry.body = body = name_end + 2
            if gid > 0:
                entry.dtype, ndim = struct.unpack_from("bB", buf, body)
                entry.dims = tuple(buf[body + 2 : body + 2 + ndim])
                size = abs(entry.dtype) * math.prod(entry.dims)
                entry.data = buf[entry.data_at : entry.data_at + size]
                desc_at = entry.data_at + size
            else:
                desc_at = body
            entry.description = buf[desc_at + 1 : desc_at + 1 + buf[desc_at]]
            entries.append(entry)
            if offset == 0:
                break
            pos = name_end + offset
        (data_block,) = struct.unpack_from(endian + "H", buf, 16)
        return cls(endian, param_start, (data_block - 1) * 512, entries)

    def group_ids(self) -> dict[bytes, int]:
        return {e.name.upper(): -e.gid for e in self.entries if e.is_group}

    def find(self, group: bytes, name: bytes) -> Entry | None:
        gid = self.group_ids().get(group)
        for e in self.entries:
            if e.gid == gid and e.name.upper() == name:
                return e
        return None

    def params(self) -> list[Entry]:
        return [e for e in self.entries if not e.is_group]

    def boundaries(self, size: int) -> list[int]:
        """Offsets where a cut is most likely to confuse a reader."""
        points = {0, 1, 2, 3, 255, 256, 511, 512, 513, size - 1, size - 2, size - 512}
        points.update(self.param_start + k for k in range(5))
        for e in self.entries:
            points.update((e.start, e.start + 1, e.pointer, e.pointer + 1, e.body, e.body + 1))
            if not e.is_group:
                points.update((e.data_at, e.data_at + len(e.data)))
        points.update(self.data_start + k for k in (-1, 0, 1, 2, 4, 512))
        points.update(self.data_start + (size - self.data_start) * k // 8 for k in range(1, 8))
        return sorted(p for p in points if 0 <= p < size)


@functools.cache
def _layout(name: str) -> Layout:
    return Layout.parse(source(name))


def encode_entries(entries: list[Entry], endian: str) -> bytes:
    out = bytearray()
    for i, e in enumerate(entries):
        name_len = -len(e.name) if e.locked else len(e.name)
        if e.is_group:
            body = bytes([len(e.description)]) + e.description
        else:
            body = (
                struct.pack("bB", e.dtype, len(e.dims))
                + bytes(e.dims)
                + e.data
                + bytes([len(e.description)])
                + e.description
            )
        pointer = 0 if i == len(entries) - 1 else 2 + len(body)
        out += struct.pack("bb", name_len, e.gid) + e.name + struct.pack(endian + "h", pointer)
        out += body
    return bytes(out)


def rebuild(
    original: bytes, layout: Layout, entries: list[Entry], *, fix_data_start: bool
) -> bytes:
    """A file with ``entries`` as its parameter section and the original header and samples.

    With ``fix_data_start`` the header's and POINT:DATA_START's block numbers are moved to where
    the samples now start (unless a mutation rewrote DATA_START itself).
    """
    entries = [dataclasses.replace(x) for x in entries]
    size = 4 + len(encode_entries(entries, layout.endian))  # the same whatever DATA_START holds
    n_blocks = -(-size // 512)
    data_block = layout.param_start // 512 + n_blocks + 1
    header = bytearray(original[: layout.param_start])
    if fix_data_start:
        struct.pack_into(layout.endian + "H", header, 16, data_block & 0xFFFF)
        point = {x.name.upper(): -x.gid for x in entries if x.is_group}.get(b"POINT")
        for x in entries:
            if x.gid == point and x.name.upper() == b"DATA_START" and x.dtype == 2 and x.data:
                x.data = struct.pack(layout.endian + "H", data_block & 0xFFFF) + x.data[2:]
    section = bytearray(original[layout.param_start : layout.param_start + 4])
    section[2] = min(n_blocks, 255)
    section += encode_entries(entries, layout.endian)
    section += b"\x00" * (-len(section) % 512)
    return bytes(header + section + original[layout.data_start :])


def set_param(
    entries: list[Entry], group: bytes, name: bytes, dtype: int, dims: tuple[int, ...], data: bytes
) -> list[Entry]:
    """``entries`` with GROUP:NAME replaced (or added, with its group if need be)."""
    entries = list(entries)
    ids = {x.name.upper(): -x.gid for x in entries if x.is_group}
    if group not in ids:
        ids[group] = max([0, *ids.values()]) + 1
        entries.append(Entry(-ids[group], group))
    gid = ids[group]
    entries = [x for x in entries if not (x.gid == gid and x.name.upper() == name)]
    return [*entries, Entry(gid, name, dtype=dtype, dims=dims, data=data)]


# --------------------------------------------------------------------------------------------
# value generators

EXTREME_FLOATS = [
    0.0, -0.0, float("nan"), float("inf"), float("-inf"), -1.0, 1.0, 1e30, -1e30, 1e-30,
    3.4e38, -3.4e38, 1e-45, 0.5, 2.0**31, 2.0**40, 65535.0, 65536.0, -65536.0,
]  # fmt: skip
EXTREME_INT16 = [0, 1, -1, 2, 0x7FFF, -0x8000, -2, 255, 256, 1000]
EXTREME_UINT16 = [0, 1, 2, 3, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
EXTREME_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x20]


def pack_floats(values: list[float], endian: str) -> bytes:
    return struct.pack(f"{endian}{len(values)}f", *values)


@st.composite
def typed_values(draw) -> tuple[int, tuple[int, ...], bytes]:
    """(dtype, dims, little-endian-agnostic data) for a replacement parameter value."""
    kind = draw(st.sampled_from(["float", "int16", "int8", "string", "strings", "empty", "huge"]))
    if kind == "float":
        n = draw(st.integers(0, 6))
        values = draw(st.lists(st.sampled_from(EXTREME_FLOATS), min_size=n, max_size=n))
        return 4, ((n,) if n != 1 or draw(st.booleans()) else ()), values  # type: ignore[return-value]
    if kind == "int16":
        n = draw(st.integers(0, 6))
        values = draw(st.lists(st.sampled_from(EXTREME_INT16), min_size=n, max_size=n))
        return 2, ((n,) if n != 1 or draw(st.booleans()) else ()), values  # type: ignore[return-value]
    if kind == "int8":
        n = draw(st.integers(0, 4))
        raw = bytes(draw(st.lists(st.sampled_from(EXTREME_BYTES), min_size=n, max_size=n)))
        return 1, (n,), raw
    if kind == "string":
        text = draw(
            st.sampled_from([b"", b" ", b"\x00", b"EMG\x001", b"CH1 Raw", b"UNSIGNED", b"x" * 255])
        )
        return -1, (len(text),), text
    if kind == "strings":
        width = draw(st.integers(0, 16))
        count = draw(st.integers(0, 8))
        words = draw(
            st.lists(
                st.sampled_from([b"CH1 Raw", b"CH1 activated", b"EMG 1", b"\x00\x00", b"mV", b""]),
                min_size=count,
                max_size=count,
            )
        )
        raw = b"".join(w[:width].ljust(width, b" ") for w in words)
        return -1, (width, count), raw
    if kind == "empty":
        dtype = draw(st.sampled_from([-1, 1, 2, 4]))
        return dtype, draw(st.sampled_from([(0,), (0, 0), (0, 4), (4, 0)])), b""
    # dimensions whose product is ~2**40 (or more) over a few bytes of data
    dtype = draw(st.sampled_from([-1, 1, 2, 4]))
    dims = draw(st.sampled_from([(255,) * 5, (0, 255, 255, 255, 255), (255,) * 7, (16, 255, 255)]))
    return dtype, dims, b"\x01" * draw(st.integers(0, 64))


def materialise(value, endian: str) -> tuple[int, tuple[int, ...], bytes]:
    dtype, dims, payload = value
    if isinstance(payload, list):
        payload = (
            pack_floats(payload, endian)
            if dtype == 4
            else struct.pack(f"{endian}{len(payload)}h", *payload)
        )
    return dtype, dims, payload


# parameters the reader and the analysis look at, and a few they do not
INTERESTING = [
    (b"POINT", b"USED"), (b"POINT", b"SCALE"), (b"POINT", b"RATE"), (b"POINT", b"DATA_START"),
    (b"POINT", b"FRAMES"), (b"POINT", b"LONG_FRAMES"), (b"ANALOG", b"USED"),
    (b"ANALOG", b"LABELS"), (b"ANALOG", b"UNITS"), (b"ANALOG", b"DESCRIPTIONS"),
    (b"ANALOG", b"RATE"), (b"ANALOG", b"SCALE"), (b"ANALOG", b"GEN_SCALE"),
    (b"ANALOG", b"OFFSET"), (b"ANALOG", b"FORMAT"), (b"TRIAL", b"ACTUAL_START_FIELD"),
    (b"TRIAL", b"ACTUAL_END_FIELD"), (b"TRIAL", b"DATE"), (b"TRIAL", b"TIME"),
    (b"FORCE_PLATFORM", b"CHANNEL"), (b"INFO", b"GAME_NAME"), (b"INFO", b"GAME_LEVEL"),
    (b"INFO", b"DURATION"), (b"INFO", b"THERAPIST_ID"), (b"INFO", b"TIME"),
    (b"SUBJECTS", b"PLAYER_NAME"), (b"SUBJECTS", b"GAME_SCORE"), (b"MISC", b"NOTHING"),
]  # fmt: skip
GROUPS = sorted({g for g, _ in INTERESTING})


# --------------------------------------------------------------------------------------------
# mutations: each strategy returns the mutated bytes, labelled with the recipe


class Mutated(bytes):
    """Mutated file content whose repr is its recipe (hypothesis prints it for a failure)."""

    recipe: str

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {self.recipe}>"


def mutated(content: bytes | bytearray, recipe: list[str]) -> Mutated:
    out = Mutated(content)
    out.recipe = "; ".join(recipe)
    return out


def byte_flips(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    n = len(original)
    regions = {
        "header": (0, layout.param_start or 512),
        "parameters": (layout.param_start, layout.data_start),
        "data": (layout.data_start, n),
        "anywhere": (0, n),
    }

    @st.composite
    def strategy(draw) -> bytes:
        out, recipe = bytearray(original), []
        for _ in range(draw(st.integers(1, 16))):
            lo, hi = regions[draw(st.sampled_from(sorted(regions)))]
            pos = draw(st.integers(lo, max(lo, hi - 1)))
            if draw(st.booleans()):
                out[pos] ^= draw(st.integers(1, 255))
            else:
                out[pos] = draw(st.sampled_from(EXTREME_BYTES))
            recipe.append(f"byte {pos} = 0x{out[pos]:02X}")
        return mutated(out, recipe)

    return strategy()


def truncations(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    points = layout.boundaries(len(original))

    @st.composite
    def strategy(draw) -> bytes:
        cut = draw(st.sampled_from(points)) + draw(st.integers(-3, 3))
        cut = min(max(cut, 0), len(original) - 1)
        return mutated(original[:cut], [f"cut at {cut} of {len(original)}"])

    return strategy()


def header_fields(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    e = layout.endian
    ps = layout.param_start

    @st.composite
    def strategy(draw) -> bytes:
        out, recipe = bytearray(original), []
        for _ in range(draw(st.integers(1, 3))):
            field = draw(
                st.sampled_from(
                    ["word", "scale", "frame_rate", "param_block", "n_blocks", "processor",
                     "frames_inverted", "data_start_past_eof"]
                )
            )  # fmt: skip
            if field == "word":  # points, analog words, first/last frame, gap, data start, ...
                k = draw(st.sampled_from([2, 3, 4, 5, 6, 9, 10]))
                value = draw(st.sampled_from(EXTREME_UINT16))
                struct.pack_into(e + "H", out, 2 * (k - 1), value)
                recipe.append(f"header word {k} = {value}")
            elif field in ("scale", "frame_rate"):
                value = draw(st.sampled_from(EXTREME_FLOATS))
                struct.pack_into(e + "f", out, 12 if field == "scale" else 20, value)
                recipe.append(f"header {field} = {value}")
            elif field == "param_block":
                out[0] = draw(st.sampled_from([0, 1, 3, 255, min(len(original) // 512 + 1, 255)]))
                recipe.append(f"parameter block = {out[0]}")
            elif field == "n_blocks":
                out[ps + 2] = draw(st.sampled_from([0, 1, 255]))
                recipe.append(f"parameter block count = {out[ps + 2]}")
            elif field == "processor":
                out[ps + 3] = draw(st.sampled_from([0, 83, 84, 85, 86, 87]))
                recipe.append(f"processor = {out[ps + 3]}")
            elif field == "frames_inverted":
                first, last = struct.unpack_from(e + "HH", out, 6)
                struct.pack_into(e + "HH", out, 6, last, first)
                recipe.append(f"first/last frame = {last}/{first}")
            else:
                block = len(original) // 512 + 2
                struct.pack_into(e + "H", out, 16, block & 0xFFFF)
                recipe.append(f"header data start = block {block}")
        return mutated(out, recipe)

    return strategy()


def _name(layout: Layout, entry: Entry) -> str:
    groups = {gid: name for name, gid in layout.group_ids().items()}
    group = groups.get(entry.gid, b"?")
    return f"{group.decode('latin-1')}:{entry.name.decode('latin-1')}"


def parameter_values(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    """Overwrite a parameter's stored values in place with extreme ones."""
    e = layout.endian
    targets = [p for p in layout.params() if p.data]
    important = [p for g, n in INTERESTING if (p := layout.find(g, n)) is not None and p.data]

    @st.composite
    def strategy(draw) -> bytes:
        out, recipe = bytearray(original), []
        for _ in range(draw(st.integers(1, 3))):
            pool = important if draw(st.booleans()) else targets
            p = draw(st.sampled_from(pool))
            count = len(p.data) // max(abs(p.dtype), 1)
            same = draw(st.booleans())
            value, written = None, []
            for i in range(count):
                if value is None or not same:
                    if p.dtype == 4:
                        value = draw(st.sampled_from(EXTREME_FLOATS))
                        raw = pack_floats([value], e)
                    elif p.dtype == 2:
                        value = draw(st.sampled_from(EXTREME_INT16))
                        raw = struct.pack(e + "h", value)
                    else:
                        value = draw(st.sampled_from([*EXTREME_BYTES, ord("E")]))
                        raw = bytes([value])
                    written.append(value)
                out[p.data_at + i * len(raw) : p.data_at + (i + 1) * len(raw)] = raw
            recipe.append(f"{_name(layout, p)} values = {written}{' (all)' if same else ''}")
        return mutated(out, recipe)

    return strategy()


def parameter_records(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    """Damage the bookkeeping of a parameter record: lengths, ids, pointers, types, dimensions."""
    e = layout.endian
    entries = layout.entries
    section_end = layout.data_start

    @st.composite
    def strategy(draw) -> bytes:
        out, recipe = bytearray(original), []
        for _ in range(draw(st.integers(1, 3))):
            r = draw(st.sampled_from(entries))
            field = draw(st.sampled_from(["name_len", "gid", "pointer", "dtype", "ndim", "dims"]))
            what = f"{_name(layout, r)} {field}"
            if field == "name_len":  # negative, zero, or running past the section
                past = min(section_end - r.start, 127)
                value = draw(st.sampled_from([-128, -1, 0, 1, 127, past]))
                out[r.start] = value & 0xFF
            elif field == "gid":
                other = draw(st.sampled_from(sorted(layout.group_ids().values())))
                value = draw(st.sampled_from([0, -r.gid, 127, -128, other, -other, 99, -99]))
                out[r.start + 1] = value & 0xFF
            elif field == "pointer":
                past = min(section_end + 4096 - r.pointer, 0x7FFF)
                value = draw(st.sampled_from([0, 1, 2, -1, -2, -0x8000, 0x7FFF, past]))
                struct.pack_into(e + "h", out, r.pointer, value)
            elif r.is_group:
                continue
            elif field == "dtype":
                value = draw(st.sampled_from([-128, -2, -1, 0, 1, 2, 3, 4, 5, 127]))
                out[r.body] = value & 0xFF
            elif field == "ndim":
                value = draw(st.sampled_from([0, 1, 2, 5, 7, 255]))
                out[r.body + 1] = value
            else:  # dimensions of 255: products up to 255**ndim (2**40 with five)
                value = [draw(st.sampled_from([0, 1, 255])) for _ in r.dims]
                out[r.body + 2 : r.body + 2 + len(r.dims)] = bytes(value)
            recipe.append(f"{what} = {value}")
        return mutated(out, recipe)

    return strategy()


def parameter_sections(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    """Rebuilt parameter sections: groups missing, duplicated, renamed; parameters retyped."""

    @st.composite
    def strategy(draw) -> bytes:
        entries = [dataclasses.replace(x) for x in layout.entries]
        touched_data_start = False
        recipe = []

        def ids() -> dict[bytes, int]:
            return {x.name.upper(): -x.gid for x in entries if x.is_group}

        def label(x: Entry) -> str:
            groups = {gid: name for name, gid in ids().items()}
            if x.is_group:
                return f"group {x.name.decode('latin-1')}"
            group = groups.get(x.gid, b"?").decode("latin-1")
            return f"{group}:{x.name.decode('latin-1')}"

        for _ in range(draw(st.integers(1, 4))):
            op = draw(
                st.sampled_from(
                    ["set", "set", "set", "drop_group", "drop_group_and_params", "drop_param",
                     "duplicate_group", "duplicate_param", "rename_group", "orphan", "swap"]
                )
            )  # fmt: skip
            groups = [x for x in entries if x.is_group]
            params = [x for x in entries if not x.is_group]
            if op == "set":
                group, name = draw(st.sampled_from(INTERESTING))
                touched_data_start |= name == b"DATA_START"
                value = draw(typed_values())
                entries[:] = set_param(entries, group, name, *materialise(value, layout.endian))
                recipe.append(f"set {group.decode()}:{name.decode()} = {value!r}")
            elif op in ("drop_group", "drop_group_and_params") and groups:
                g = draw(st.sampled_from(groups))
                recipe.append(f"{op} {label(g)}")
                entries.remove(g)
                if op == "drop_group_and_params":
                    entries[:] = [x for x in entries if x.gid != -g.gid]
            elif op == "drop_param" and params:
                p = draw(st.sampled_from(params))
                recipe.append(f"drop {label(p)}")
                entries.remove(p)
            elif op == "duplicate_group" and groups:
                g = draw(st.sampled_from(groups))
                new_id = draw(st.sampled_from([-g.gid, max(ids().values()) + 1]))
                copies = [dataclasses.replace(x, gid=new_id) for x in entries if x.gid == -g.gid]
                entries.append(Entry(-new_id, g.name))
                with_params = draw(st.booleans())
                if with_params:
                    entries.extend(copies)
                recipe.append(f"duplicate {label(g)} as id {new_id} (params: {with_params})")
            elif op == "duplicate_param" and params:
                p = draw(st.sampled_from(params))
                value = draw(typed_values())
                dtype, dims, data = materialise(value, layout.endian)
                entries.append(dataclasses.replace(p, dtype=dtype, dims=dims, data=data))
                recipe.append(f"duplicate {label(p)} = {value!r}")
            elif op == "rename_group" and groups:
                g = draw(st.sampled_from(groups))
                old = label(g)
                g.name = draw(st.sampled_from([*GROUPS, b"", b"X" * 127]))
                recipe.append(f"rename {old} to {g.name.decode()!r}")
            elif op == "orphan" and params:
                p = draw(st.sampled_from(params))
                recipe.append(
                    f"move {label(p)} to group id {(gid := draw(st.sampled_from([99, 127, 1, 2])))}"
                )
                p.gid = gid
            elif op == "swap" and len(entries) > 1:
                i = draw(st.integers(0, len(entries) - 1))
                j = draw(st.integers(0, len(entries) - 1))
                recipe.append(f"swap {label(entries[i])} and {label(entries[j])}")
                entries[i], entries[j] = entries[j], entries[i]
        entries = [x for x in entries if x.name]  # a zero-length name ends the section
        content = rebuild(original, layout, entries, fix_data_start=not touched_data_start)
        return mutated(content, recipe)

    return strategy()


def samples(original: bytes, layout: Layout) -> st.SearchStrategy[bytes]:
    """Runs of extreme float32 samples (all inputs store floats): overflow, denormals, steps."""
    n_words = (len(original) - layout.data_start) // 4

    @st.composite
    def strategy(draw) -> bytes:
        out, recipe = bytearray(original), []
        for _ in range(draw(st.integers(1, 3))):
            first = draw(st.integers(0, n_words - 1))
            count = draw(st.sampled_from([1, 2, 7, 100, 1000, n_words]))
            stride = draw(st.sampled_from([1, 2, 3, 4]))
            value = draw(st.sampled_from(EXTREME_FLOATS))
            alternate = draw(st.booleans())  # +v, -v, ...: the largest swing a filter can see
            for k, word in enumerate(range(first, min(first + count * stride, n_words), stride)):
                v = -value if alternate and k % 2 else value
                struct.pack_into(layout.endian + "f", out, layout.data_start + 4 * word, v)
            recipe.append(f"samples from word {first}, {count} every {stride} = {value}")
            recipe[-1] += " alternating" if alternate else ""
        return mutated(out, recipe)

    return strategy()


MUTATIONS: dict[str, Callable[[bytes, Layout], st.SearchStrategy[bytes]]] = {
    "byte_flips": byte_flips,
    "truncation": truncations,
    "header_fields": header_fields,
    "parameter_values": parameter_values,
    "parameter_records": parameter_records,
    "parameter_sections": parameter_sections,
    "samples": samples,
}


# --------------------------------------------------------------------------------------------
# the oracle


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail an example that runs far past any sane time instead of hanging the test run."""

    def on_alarm(signum, frame):
        raise Hang(f"analysis still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_readable(err: EmgError) -> None:
    message = str(err)
    assert message == err.reason
    assert message.strip() == message and len(message) >= 15 and " " in message, message
    assert "\n" not in message, message
    assert type(err).__module__.startswith("emg_core"), type(err)


def finite(value, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi


def assert_storable(result: SessionResult) -> None:
    """What the session, session_parameters and contractions rows need."""
    assert finite(result.duration_s, 0) and result.duration_s > 0
    assert finite(result.overall_compliance, 0, 1)
    assert result.symmetry is None or finite(result.symmetry, 0, 1)
    assert result.channels
    names = [ch.name for ch in result.channels]
    assert len(set(names)) == len(names), f"channel names repeat: {names}"
    for ch in result.channels:
        assert finite(ch.sampling_rate, 0) and ch.sampling_rate > 0
        assert finite(ch.signal_quality, 0, 1)
        assert ch.activation_agreement is None or finite(ch.activation_agreement, 0, 1)
        assert finite(ch.masked_s, 0) and finite(ch.mains_fraction, 0, 1)
        assert all(isinstance(w, str) and w for w in ch.warnings)
        for name in ("rms", "mav"):
            assert finite(getattr(ch, name), 0), (name, getattr(ch, name))
        for f in dataclasses.fields(ch):
            value = getattr(ch, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), (f.name, value)
        if not ch.usable:
            # no numbers for a channel that cannot be trusted, and a reason instead
            assert ch.warnings and ch.contractions_total is None and not ch.contractions
            continue
        for rate in ("completion_rate", "intensity_rate", "duration_rate", "compliance_rate"):
            assert finite(getattr(ch, rate), 0, 1), (rate, getattr(ch, rate))
        for name in ("mvc_value", "mvc_threshold", "time_under_tension_ms"):
            assert finite(getattr(ch, name), 0), (name, getattr(ch, name))
        assert ch.contractions_total == len(ch.contractions)
        assert 0 <= ch.contractions_good <= ch.contractions_total
        for c in ch.contractions:
            assert 0 <= c.start_ms < c.end_ms <= result.duration_s * 1000 + 1e-6
            for f in dataclasses.fields(c):
                value = getattr(c, f.name)
                assert value is None or not isinstance(value, float) or math.isfinite(value)
    # the JSON the daemon commits: strict JSON, and no NUL (text and jsonb columns refuse it)
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert "\\u0000" not in text


def check(content: bytes) -> str:
    """Analyse hostile bytes; return "ok" or the error's class name, fail on anything else."""
    with time_limit(HARD_LIMIT_S):
        try:
            result = analyze(content)
        except EmgError as err:
            assert_readable(err)
            return type(err).__name__
    assert_storable(result)
    return "ok"


# --------------------------------------------------------------------------------------------
# the fuzz tests


@pytest.fixture(autouse=True, scope="module")
def address_space_cap():
    """A runaway allocation becomes a MemoryError (a failure here) instead of the OOM killer.

    The machine is shared: the cap is this process's current size plus 2 GB, lifted afterwards.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/status") as status:
            size = next(int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmSize:"))
    except (OSError, StopIteration):  # not Linux: no cap, the tests still run
        yield
        return
    cap = size + 2 * 1024**3
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def fuzz_test(mutation: str):
    @pytest.mark.parametrize("name", SOURCES)
    @FUZZ
    @given(data=st.data())
    def test(name, data):
        original = source(name)
        layout = _layout(name)
        check(data.draw(MUTATIONS[mutation](original, layout), label=mutation))

    test.__name__ = f"test_fuzz_{mutation}"
    test.__doc__ = f"{mutation.replace('_', ' ')}: a result or a readable EmgError, nothing else"
    return test


test_fuzz_byte_flips = fuzz_test("byte_flips")
test_fuzz_truncation = fuzz_test("truncation")
test_fuzz_header_fields = fuzz_test("header_fields")
test_fuzz_parameter_values = fuzz_test("parameter_values")
test_fuzz_parameter_records = fuzz_test("parameter_records")
test_fuzz_parameter_sections = fuzz_test("parameter_sections")
test_fuzz_samples = fuzz_test("samples")


@pytest.mark.parametrize("name", SOURCES)
def test_inputs_analyse_cleanly_and_rebuild_identically(name):
    """The fuzz starts from good files, and the rebuilder alone changes nothing."""
    original = source(name)
    layout = _layout(name)
    assert check(original) == "ok"
    same = rebuild(original, layout, layout.entries, fix_data_start=True)
    assert analyze(same).to_dict() == analyze(original).to_dict()


# --------------------------------------------------------------------------------------------
# inputs that broke the reader once, kept as plain examples


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def i16(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


def edited(*params, header: dict[int, int] | None = None) -> bytes:
    """The 1-s synthetic recording with parameters set to ``(group, name, dtype, dims, data)``."""
    name = "ghostly-1s-1000Hz"
    original, layout = source(name), _layout(name)
    entries = layout.entries
    for param in params:
        entries = set_param(entries, *param)
    content = bytearray(rebuild(original, layout, entries, fix_data_start=True))
    for word, value in (header or {}).items():
        struct.pack_into("<H", content, 2 * (word - 1), value)
    return bytes(content)


NAN, INF = float("nan"), float("inf")

#: (id, content builder, outcome of check())
KNOWN_HOSTILE: list[tuple[str, Callable[[], bytes], str]] = [
    # 0 x 255**4 blank strings: no bytes to check, so it once built a 4e9-item list
    (
        "zero-width-strings-0x255x255x255x255",
        lambda: edited((b"ANALOG", b"GEN_SCALE", -1, (0, 255, 255, 255, 255), b"")),
        "C3DFormatError",
    ),
    # labels stored as numbers: truth value of an array (ValueError); now "Analog n" names
    (
        "analog-labels-as-int16-numbers",
        lambda: edited((b"ANALOG", b"LABELS", 2, (3,), i16(1, 2, 3))),
        "NoEmgChannelsError",
    ),
    (
        "analog-units-as-an-empty-float-array",
        lambda: edited((b"ANALOG", b"UNITS", 4, (0,), b"")),
        "ok",
    ),
    # frame counts stored as NaN/infinite floats: int(nan) raised ValueError/OverflowError;
    # now ignored, so the header's count (the right one here) stands
    ("point-frames-float-nan", lambda: edited((b"POINT", b"FRAMES", 4, (), f32(NAN))), "ok"),
    ("point-frames-float-inf", lambda: edited((b"POINT", b"FRAMES", 4, (), f32(INF))), "ok"),
    (
        "trial-actual-start-field-float-nan",
        lambda: edited(
            (b"TRIAL", b"ACTUAL_START_FIELD", 4, (2,), f32(NAN, 0)),
            (b"TRIAL", b"ACTUAL_END_FIELD", 4, (2,), f32(100, 0)),
        ),
        "ok",
    ),
    (
        "trial-actual-end-field-float-inf",
        lambda: edited(
            (b"TRIAL", b"ACTUAL_START_FIELD", 2, (2,), i16(1, 0)),
            (b"TRIAL", b"ACTUAL_END_FIELD", 4, (2,), f32(-INF, INF)),
        ),
        "ok",
    ),
    # force-plate channel numbers as NaN/infinite floats: int(nan) raised ValueError
    (
        "force-platform-channel-float-nan-inf",
        lambda: edited((b"FORCE_PLATFORM", b"CHANNEL", 4, (3,), f32(NAN, INF, 3))),
        "ok",
    ),
]


def test_nul_inside_file_strings_never_reaches_the_result():
    """A NUL inside a label or the game's text (INFO:THERAPIST_ID = b"T\\x00\\x01\\xff") made a
    result PostgreSQL refuses (text and jsonb hold no NUL): the job failed at commit time."""
    labels = b"".join(s.ljust(8) for s in (b"EMG\x001", b"EMG 2\x00\x00", b"Fz\x00\x00", b"Fx"))
    content = edited(
        (b"ANALOG", b"LABELS", -1, (8, 4), labels),
        (b"INFO", b"THERAPIST_ID", -1, (4,), b"T\x00\x01\xff"),
    )
    assert check(content) == "ok"
    result = analyze(content)
    assert [ch.name for ch in result.channels] == ["EMG 1", "EMG 2"]
    assert result.metadata.therapist_id == "T \x01\xff"


@pytest.mark.parametrize(
    ("build", "outcome"),
    [pytest.param(build, outcome, id=case) for case, build, outcome in KNOWN_HOSTILE],
)
def test_known_hostile_input(build, outcome):
    assert check(build()) == outcome


def to_dec(ieee: bytes) -> bytes:
    """IEEE little-endian float32 bytes as DEC (VAX F) floats: 4x the value, halves swapped."""
    u = (np.frombuffer(ieee, "<f4") * np.float32(4)).view("<u4")
    return ((u >> np.uint32(16)) | (u << np.uint32(16))).astype("<u4").tobytes()


def integer_recording(processor: int) -> bytes:
    """The 1-s synthetic recording stored as int16 samples (POINT:SCALE > 0), Intel or DEC."""
    name = "ghostly-1s-1000Hz"
    original, layout = source(name), _layout(name)
    rec = read_c3d(original)
    step = 1e-7  # volts per bit
    samples = np.round(rec.channels(range(rec.n_channels)).T / step)
    assert np.abs(samples).max() < 2**15
    entries = set_param(layout.entries, b"POINT", b"SCALE", 4, (), f32(1.0))
    entries = set_param(entries, b"ANALOG", b"SCALE", 4, (4,), f32(*[step] * 4))
    if processor == 85:
        entries = [
            dataclasses.replace(x, data=to_dec(x.data)) if x.gid > 0 and x.dtype == 4 else x
            for x in entries
        ]
    content = bytearray(rebuild(original, layout, entries, fix_data_start=True))
    content[layout.param_start + 3] = processor
    data_at = (struct.unpack_from("<H", content, 16)[0] - 1) * 512
    return bytes(content[:data_at]) + samples.astype("<i2").tobytes()


def test_dec_integer_samples_read_like_intel_ones():
    """DEC files with int16 samples were read as VAX floats of twice the size: a ValueError
    ('buffer is smaller than requested size') or garbage. Their samples are plain int16."""
    intel, dec = integer_recording(84), integer_recording(85)
    assert check(intel) == "ok" and check(dec) == "ok"
    assert read_c3d(dec).processor == "dec"
    assert analyze(dec).to_dict() == analyze(intel).to_dict()


def test_repeated_labels_are_told_apart():
    """ANALOG:LABELS ['EMG 1', 'EMG 1', 'EMG 1 (2)', 'Fx'] gave two channels named 'EMG 1':
    a result that cannot be stored (one session_parameters row per session and name)."""
    labels = b"".join(s.ljust(9) for s in (b"EMG 1", b"EMG 1", b"EMG 1 (2)", b"Fx"))
    result = analyze(edited((b"ANALOG", b"LABELS", -1, (9, 4), labels)))
    assert [ch.name for ch in result.channels] == ["EMG 1", "EMG 1 (2)", "EMG 1 (2) (2)"]
    many = b"EMG 1" * 4
    assert read_c3d(edited((b"ANALOG", b"LABELS", -1, (5, 4), many))).labels == (
        "EMG 1", "EMG 1 (2)", "EMG 1 (3)", "EMG 1 (4)",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# time and memory on the most extreme sizes a header or parameter can claim

EXTREME_SIZES: list[tuple[str, Callable[[], bytes]]] = [
    ("header-last-frame-65535", lambda: edited(header={5: 0xFFFF})),
    ("first-last-frame-inverted", lambda: edited(header={4: 100, 5: 1})),
    ("point-long-frames-2**40", lambda: edited((b"POINT", b"LONG_FRAMES", 4, (), f32(2.0**40)))),
    (
        "trial-fields-2**32-frames",
        lambda: edited(
            (b"TRIAL", b"ACTUAL_START_FIELD", 2, (2,), i16(1, 0)),
            (b"TRIAL", b"ACTUAL_END_FIELD", 2, (2,), i16(-1, -1)),
        ),
    ),
    ("analog-used-32767", lambda: edited((b"ANALOG", b"USED", 2, (), i16(0x7FFF)))),
    ("analog-used-minus-1", lambda: edited((b"ANALOG", b"USED", 2, (), i16(-1)))),
    ("point-used-65535", lambda: edited((b"POINT", b"USED", 2, (), i16(-1)))),
    ("analog-per-frame-65535", lambda: edited(header={10: 0xFFFF, 3: 0xFFFF})),
    ("analog-rate-1e30", lambda: edited((b"ANALOG", b"RATE", 4, (), f32(1e30)))),
    ("point-rate-1e-45", lambda: edited((b"POINT", b"RATE", 4, (), f32(1e-45)))),
    ("parameter-dims-255**5", lambda: edited((b"ANALOG", b"OFFSET", 2, (255,) * 5, b"\x01" * 64))),
    ("parameter-dims-255**7", lambda: edited((b"ANALOG", b"SCALE", 4, (255,) * 7, b""))),
    (
        "blank-strings-0x255**4",
        lambda: edited((b"ANALOG", b"LABELS", -1, (0, 255, 255, 255, 255), b"")),
    ),
    (
        "labels-120x255-chars",  # the longest labels a parameter holds, built to backtrack
        lambda: edited(
            (b"ANALOG", b"LABELS", -1, (255, 120), (b"CH1" + b" " * 251 + b"x") * 120),
            (b"ANALOG", b"USED", 2, (), i16(4)),
        ),
    ),
]


@pytest.mark.parametrize("build", [pytest.param(b, id=case) for case, b in EXTREME_SIZES])
def test_extreme_sizes_stay_small_and_quick(build):
    content = build()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        outcome = check(content)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome in ("ok", "C3DFormatError", "NoEmgChannelsError", "SamplingRateError")
    assert peak < PEAK_LIMIT_BYTES, f"peak {peak / 1e6:.0f} MB"
    assert elapsed < DEADLINE_S
