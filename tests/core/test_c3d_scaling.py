"""Analog scaling of the C3D reader: ``value = (raw - ANALOG:OFFSET) * ANALOG:SCALE * GEN_SCALE``.

The vendor files and the synthetic recordings all have OFFSET 0, SCALE 1 and GEN_SCALE 1, so they
cannot tell a reader that adds the offset, or ignores GEN_SCALE, from a correct one. The files
here are written byte by byte (``ezc3d`` always writes float samples and folds the scale into them
on writing) with non-trivial per-channel OFFSET and SCALE, a GEN_SCALE other than 1, and both
integer (POINT:SCALE > 0) and float (POINT:SCALE < 0) samples.

The C3D User Guide applies the same formula to float samples as to integer ones ("Analog Data -
Floating-point format": floats hold the unscaled ADC value, and OFFSET, SCALE and GEN_SCALE are
applied "in exactly the same way"); ``ezc3d`` does the same, and its reading of each file is
compared with ours.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from emg_core.c3d import read_c3d
from emg_core.synthetic import ghostly_signals

BLOCK = 512
INTEL = 84
PER_FRAME = 10  # analog samples per channel per (empty) point frame


def c3d_file(
    raw: np.ndarray,
    *,
    scale: tuple[float, ...],
    offset: tuple[int, ...],
    gen_scale: float,
    floats: bool,
    rate: float = 1000.0,
    analog_format: str | None = None,
) -> bytes:
    """A minimal Intel C3D file with analog channels only.

    Parameters
    ----------
    raw : ndarray, shape (n_channels, n_samples)
        Stored sample values (ADC counts); ``n_samples`` a multiple of ``PER_FRAME``.
    scale, offset : tuple
        ``ANALOG:SCALE`` (float32) and ``ANALOG:OFFSET`` (int16), one per channel.
    gen_scale : float
        ``ANALOG:GEN_SCALE``.
    floats : bool
        Float32 samples (POINT:SCALE < 0) instead of int16 ones.
    analog_format : str, optional
        ``ANALOG:FORMAT`` (``"UNSIGNED"`` stores uint16 samples).
    """
    n_ch, n = raw.shape
    assert n % PER_FRAME == 0
    n_frames = n // PER_FRAME
    point_scale = -0.1 if floats else 0.1
    labels = [f"EMG {i + 1}" for i in range(n_ch)]
    data_block = 4  # header (1) + parameter section (2, 3)

    def f32(*values: float) -> bytes:
        return struct.pack(f"<{len(values)}f", *values)

    def i16(*values: int) -> bytes:
        return struct.pack(f"<{len(values)}h", *values)

    def text(items: list[str], width: int) -> bytes:
        return b"".join(s.encode("ascii").ljust(width) for s in items)

    # (group id, name, type (-1 char, 2 int16, 4 float32), dimensions, data)
    params = [
        (1, b"USED", 2, (), i16(0)),
        (1, b"SCALE", 4, (), f32(point_scale)),
        (1, b"RATE", 4, (), f32(rate / PER_FRAME)),
        (1, b"FRAMES", 2, (), i16(n_frames)),
        (1, b"DATA_START", 2, (), i16(data_block)),
        (2, b"USED", 2, (), i16(n_ch)),
        (2, b"RATE", 4, (), f32(rate)),
        (2, b"GEN_SCALE", 4, (), f32(gen_scale)),
        (2, b"SCALE", 4, (n_ch,), f32(*scale)),
        (2, b"OFFSET", 2, (n_ch,), i16(*offset)),
        (2, b"LABELS", -1, (5, n_ch), text(labels, 5)),
        (2, b"UNITS", -1, (2, n_ch), text(["mV"] * n_ch, 2)),
    ]
    if analog_format is not None:
        fmt = analog_format.encode("ascii")
        params.append((2, b"FORMAT", -1, (len(fmt),), fmt))
    records = [(b"POINT", -1, b"\x00"), (b"ANALOG", -2, b"\x00")]
    records += [
        (name, gid, struct.pack("bB", dtype, len(dims)) + bytes(dims) + data + b"\x00")
        for gid, name, dtype, dims, data in params
    ]
    section = bytearray([1, 0x50, 2, INTEL])
    for i, (name, gid, body) in enumerate(records):
        # the int16 after the name points to the next record, counted from itself; 0 ends
        pointer = 0 if i == len(records) - 1 else 2 + len(body)
        section += struct.pack("bb", len(name), gid) + name + struct.pack("<h", pointer) + body
    assert len(section) <= 2 * BLOCK
    section += bytes(2 * BLOCK - len(section))

    header = bytearray(BLOCK)
    header[0], header[1] = 2, 0x50  # parameter section at block 2; the C3D key byte
    # words 2-5: points, analog words per frame, first and last frame
    struct.pack_into("<4H", header, 2, 0, n_ch * PER_FRAME, 1, n_frames)
    struct.pack_into("<f", header, 12, point_scale)
    struct.pack_into("<2H", header, 16, data_block, PER_FRAME)
    struct.pack_into("<f", header, 20, rate / PER_FRAME)

    unsigned = analog_format == "UNSIGNED"
    dtype = "<f4" if floats else "<u2" if unsigned else "<i2"
    samples = np.asarray(raw).T.astype(dtype)  # stored sample-major: s0(ch0..chN) s1(...) ...
    return bytes(header + section) + samples.tobytes()


def ezc3d_analogs(content: bytes, tmp_path) -> np.ndarray:
    """``ezc3d``'s reading of the analog channels, shape (n_channels, n_samples)."""
    import ezc3d

    path = tmp_path / "scaled.c3d"
    path.write_bytes(content)
    return ezc3d.c3d(str(path))["data"]["analogs"][0]


def tiled(columns: list[list[float]]) -> np.ndarray:
    """The hand-worked samples repeated so the file holds whole frames."""
    return np.tile(np.array(columns, dtype=np.float64), (1, PER_FRAME // 2))


# Three channels, each with its own OFFSET and SCALE, and one GEN_SCALE for all of them.
OFFSET = (2048, 512, 17)  # a 12-bit offset-binary zero, a mid value, a small auto-zero
SCALE = (0.25, -0.0078125, 0.000305)  # the negative scale inverts its channel (allowed)
GEN_SCALE = 0.5
RAW = [
    [2048, 3072, 0, 4095],
    [512, 1536, -32768, 32767],
    [17, 18, 16, 1017],
]
PHYSICAL = [
    # (raw - 2048) * 0.25 * 0.5 = (raw - 2048) / 8
    #   0 / 8, 1024 / 8, -2048 / 8, 2047 / 8
    [0.0, 128.0, -256.0, 255.875],
    # (raw - 512) * -0.0078125 * 0.5 = -(raw - 512) / 256; -32768 - 512 = -33280 does not fit
    # in 16 bits, so the subtraction must happen after widening
    #   -0 / 256, -1024 / 256, 33280 / 256, -32255 / 256
    [0.0, -4.0, 130.0, -125.99609375],
    # (raw - 17) * 0.000305 * 0.5 = (raw - 17) * 1.525e-4
    #   0, 1 * 1.525e-4, -1 * 1.525e-4, 1000 * 1.525e-4
    [0.0, 1.525e-4, -1.525e-4, 0.1525],
]
# SCALE is stored as float32: 0.000305 reads back ~6e-8 relative off, far below what a sign or
# factor error moves
RTOL = 1e-6


@pytest.mark.parametrize("floats", [False, True], ids=["int16", "float32"])
def test_offset_is_subtracted_and_both_scales_applied(floats):
    rec = read_c3d(
        c3d_file(tiled(RAW), scale=SCALE, offset=OFFSET, gen_scale=GEN_SCALE, floats=floats)
    )
    assert rec.n_channels == 3 and rec.n_samples == 4 * PER_FRAME // 2
    np.testing.assert_allclose(rec.channels(range(3)), tiled(PHYSICAL), rtol=RTOL, atol=0)


def test_fractional_float_samples_are_scaled_like_integers():
    # float files hold unscaled ADC values, which need not be whole numbers
    raw = [[2560.5, 2048.0], [0.25, 512.0], [17.5, 17.0]]
    physical = [
        [64.0625, 0.0],  # (2560.5 - 2048) / 8 = 512.5 / 8
        [1.9990234375, 0.0],  # -(0.25 - 512) / 256 = 511.75 / 256
        [7.625e-5, 0.0],  # (17.5 - 17) * 1.525e-4 = 0.5 * 1.525e-4
    ]
    rec = read_c3d(
        c3d_file(tiled(raw), scale=SCALE, offset=OFFSET, gen_scale=GEN_SCALE, floats=True)
    )
    np.testing.assert_allclose(rec.channels(range(3)), tiled(physical), rtol=RTOL, atol=0)


@pytest.mark.parametrize("floats", [False, True], ids=["int16", "float32"])
def test_scaled_values_match_ezc3d(floats, tmp_path):
    content = c3d_file(tiled(RAW), scale=SCALE, offset=OFFSET, gen_scale=GEN_SCALE, floats=floats)
    expected = ezc3d_analogs(content, tmp_path)
    np.testing.assert_allclose(expected, tiled(PHYSICAL), rtol=RTOL, atol=0)  # ezc3d agrees too
    np.testing.assert_allclose(read_c3d(content).channels(range(3)), expected, rtol=RTOL, atol=0)


def test_gen_scale_multiplies_every_channel():
    # the same counts read with GEN_SCALE 0.5 and 2.0: every channel differs by exactly 4x
    low = read_c3d(c3d_file(tiled(RAW), scale=SCALE, offset=OFFSET, gen_scale=0.5, floats=False))
    high = read_c3d(c3d_file(tiled(RAW), scale=SCALE, offset=OFFSET, gen_scale=2.0, floats=False))
    np.testing.assert_allclose(high.channels(range(3)), 4 * low.channels(range(3)), rtol=1e-12)
    # (3072 - 2048) * 0.25 * 2.0 = 512
    assert high.channel(0)[1] == 512.0


@pytest.mark.parametrize("floats", [False, True], ids=["int16", "float32"])
def test_negative_offset_follows_the_standard(floats):
    # OFFSET is a signed int16 in [-32768, 32767] (C3D User Guide, ANALOG:OFFSET). ezc3d takes
    # its absolute value (AnalogsInfo), so ezc3d is not the reference for this one.
    raw = [[-300, 700]]
    rec = read_c3d(
        c3d_file(tiled(raw), scale=(0.25,), offset=(-300,), gen_scale=GEN_SCALE, floats=floats)
    )
    # (-300 - -300) * 0.25 * 0.5 = 0; (700 - -300) * 0.125 = 1000 / 8
    np.testing.assert_array_equal(rec.channel(0), tiled([[0.0, 125.0]])[0])


@pytest.mark.parametrize("floats", [False, True], ids=["int16", "float32"])
def test_adc_round_trip_of_a_synthetic_emg_recording(floats, tmp_path):
    # EMG in volts stored as ADC counts the way an acquisition system writes them: a per-channel
    # zero and gain, a common ADC resolution; read back within half a count
    _, data, _ = ghostly_signals(seed=5, duration_s=4.0, rate=1000.0, n_channels=2)
    volts = data[:2]
    offset = (2048, 1000)
    scale = (4e-6, 2.5e-6)
    gen_scale = 0.25
    # volts per count, from the float32 values the file stores
    lsb = np.asarray(scale, dtype=np.float32).astype(np.float64) * float(np.float32(gen_scale))
    counts = np.round(volts / lsb[:, None]) + np.array(offset)[:, None]
    assert np.abs(counts).max() < 32767  # the test's own precondition: no clipping
    content = c3d_file(counts, scale=scale, offset=offset, gen_scale=gen_scale, floats=floats)
    ours = read_c3d(content).channels([0, 1])
    assert np.all(np.abs(ours - volts) <= 0.5 * lsb[:, None] * (1 + 1e-6))
    np.testing.assert_allclose(ours, ezc3d_analogs(content, tmp_path), rtol=RTOL, atol=1e-12)


def test_unsigned_format_reads_the_offset_as_unsigned():
    # 16-bit offset-binary samples: OFFSET 32768 is stored as the int16 bit pattern 0x8000
    raw = [[32768, 33768, 0, 65535]]
    content = c3d_file(
        tiled(raw),
        scale=(0.5,),
        offset=(-32768,),
        gen_scale=1.0,
        floats=False,
        analog_format="UNSIGNED",
    )
    # (raw - 32768) * 0.5: 0, 1000 * 0.5, -32768 * 0.5, 32767 * 0.5
    expected = tiled([[0.0, 500.0, -16384.0, 16383.5]])[0]
    np.testing.assert_array_equal(read_c3d(content).channel(0), expected)
