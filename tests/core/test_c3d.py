"""C3D reading, EMG discovery on three vendors' files, and typed errors on hostile input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from emg_core import (
    C3DFormatError,
    EmgError,
    NoEmgChannelsError,
    SamplingRateError,
    SignalQualityError,
    analyze,
)
from emg_core.c3d import read_c3d
from emg_core.discovery import discover_emg
from emg_core.metadata import game_metadata, recorded_at
from emg_core.synthetic import c3d_bytes, ghostly_recording

from .helpers import vendor_file


@pytest.mark.parametrize("name", ["Vicon.c3d", "BTS.c3d", "Qualisys.c3d"])
def test_reader_matches_ezc3d_on_vendor_files(name):
    import ezc3d

    path = vendor_file(name)
    ours = read_c3d(path)
    theirs = ezc3d.c3d(str(path))
    expected = theirs["data"]["analogs"][0]
    assert ours.labels == tuple(theirs["parameters"]["ANALOG"]["LABELS"]["value"])
    assert ours.rate == theirs["parameters"]["ANALOG"]["RATE"]["value"][0]
    np.testing.assert_allclose(ours.channels(range(ours.n_channels)), expected, rtol=1e-6)


def test_vicon_gives_the_32_delsys_emg_channels_and_no_voltage_channel():
    sel = discover_emg(read_c3d(vendor_file("Vicon.c3d")))
    labels = [read_c3d(vendor_file("Vicon.c3d")).labels[i] for i in sel.indices]
    assert len(labels) == 32
    assert all(".EMG" in s or ".IM EMG" in s for s in labels)
    assert not any(s.startswith("Voltage") for s in labels)


def test_bts_gives_the_8_muscle_channels_in_millivolts():
    rec = read_c3d(vendor_file("BTS.c3d"))
    sel = discover_emg(rec)
    assert sel.method == "muscle_name"
    muscles = ("Rectus femoris", "Semimembranosus", "Tibialis anterior", "Gastrocnemius medialis")
    assert [rec.labels[i] for i in sel.indices] == [
        f"{side} {muscle}" for muscle in muscles for side in ("Left", "Right")
    ]
    assert {rec.units[i] for i in sel.indices} == {"mV"}


def test_qualisys_gives_the_16_emg_channels_and_none_of_its_other_volt_channels():
    rec = read_c3d(vendor_file("Qualisys.c3d"))
    sel = discover_emg(rec)
    assert [rec.labels[i] for i in sel.indices] == [f"EMG {k}" for k in range(1, 17)]


def test_explicit_include_pattern_wins_over_discovery():
    rec = read_c3d(vendor_file("Qualisys.c3d"))
    sel = discover_emg(rec, include=r"^Channel_2\d$")
    assert sel.method == "include_pattern"
    assert [rec.labels[i] for i in sel.indices] == [f"Channel_{k}" for k in range(20, 30)]
    with pytest.raises(NoEmgChannelsError, match="include pattern"):
        discover_emg(rec, include="^nothing-like-this$")


@pytest.mark.parametrize("name", ["Vicon.c3d", "BTS.c3d", "Qualisys.c3d"])
def test_vendor_files_give_a_sensible_result(name):
    result = analyze(vendor_file(name))
    assert 1.0 < result.duration_s < 10.0
    assert result.channels
    for ch in result.channels:
        assert ch.rms >= 0 and ch.mav >= 0 and ch.mav <= ch.rms + 1e-15
        assert 0.0 <= ch.signal_quality <= 1.0
        if not ch.usable:
            assert ch.warnings and ch.contractions_total is None and not ch.contractions
            continue
        assert ch.contractions_total == len(ch.contractions)
        for c in ch.contractions:
            assert 0 <= c.start_ms < c.end_ms <= result.duration_s * 1000 + 1e-6
    live = [ch for ch in result.channels if ch.rms > 0]
    assert live, "at least one channel carries signal"
    if name == "BTS.c3d":
        # four left/right muscle pairs
        assert result.symmetry is not None and 0.0 <= result.symmetry <= 1.0
        assert {ch.unit for ch in result.channels} == {"mV"}
    if name == "Vicon.c3d":
        # disconnected sensors are recorded as exact zeros: kept, but flagged flat
        flat = result.processing["channel_selection"]["flat_channels"]
        assert "Sensor 12.EMG12" in flat and "Biceps.EMG4" not in flat


def test_synthetic_ghostly_file_round_trips_samples_metadata_and_time():
    content, truth = ghostly_recording(seed=9, duration_s=20, rate=990)
    rec = read_c3d(content)
    assert rec.labels == ("CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated")
    assert rec.units == ("V",) * 4
    assert rec.rate == 990.0 and rec.n_samples == truth.n_samples
    sel = discover_emg(rec)
    assert sel.method == "ghostly" and dict(sel.activated) == {0: 2, 1: 3}
    assert game_metadata(rec) == truth.metadata
    assert recorded_at(rec) == truth.recorded_at
    # activated is exactly zero at rest (the game's gate)
    assert np.all(rec.channel(2)[: int(0.5 * 990)][50:] >= 0)


def test_more_than_65535_frames_are_read_completely():
    rate = 2000.0
    n = 1_400_000  # 70 000 frames at 20 samples per frame
    data = np.vstack([np.sin(np.arange(n) * 0.01), np.cos(np.arange(n) * 0.01)]) * 1e-3
    rec = read_c3d(c3d_bytes(("EMG 1", "EMG 2"), data, rate))
    assert rec.n_samples == n
    np.testing.assert_allclose(rec.channel(1)[-5:], data[1, -5:], rtol=1e-6)


def test_recorded_at_from_a_ghostly_file_name_when_the_file_has_none():
    data = np.random.default_rng(0).standard_normal((1, 2000)) * 1e-4
    rec = read_c3d(c3d_bytes(("EMG 1",), data, 1000.0))
    when = recorded_at(rec, "Ghostly_Emg_20230321_17-50-17-0881.c3d")
    assert (when.year, when.month, when.day, when.hour, when.minute, when.second) == (
        2023, 3, 21, 17, 50, 17,
    )  # fmt: skip


# --- hostile input ------------------------------------------------------------------------------


def good_file() -> bytes:
    content, _ = ghostly_recording(seed=1, duration_s=10, rate=1000)
    return content


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"\x00" * 4096, "not a C3D file"),
        (bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8)), "C3D"),
        (b"NOT A C3D FILE" * 10, "shorter than the 512-byte header"),
    ],
    ids=["zero-bytes", "zeros", "garbage", "text"],
)
def test_garbage_raises_a_typed_error_with_a_sentence(content, expected):
    with pytest.raises(C3DFormatError) as info:
        analyze(content)
    assert expected in str(info.value)
    assert info.value.reason == str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.1])
def test_truncated_file_is_rejected_although_ezc3d_reads_it(keep):
    content = good_file()
    cut = content[: int(len(content) * keep)]
    with pytest.raises(C3DFormatError, match="truncated"):
        analyze(cut)


def test_garbage_after_a_valid_header_never_escapes_as_an_untyped_error():
    content = bytearray(good_file())
    rng = np.random.default_rng(5)
    for trial in range(60):
        damaged = bytearray(content)
        # scribble over the parameter section, where hostile files do the most damage
        for pos in rng.integers(512, 512 * 4, size=20):
            damaged[int(pos)] = int(rng.integers(0, 256))
        try:
            analyze(bytes(damaged))
        except EmgError as err:
            assert str(err), f"trial {trial}: empty message"


def nan_file() -> bytes:
    data = np.random.default_rng(2).standard_normal((2, 5000)) * 1e-4
    data[0, 1000:1010] = np.nan
    return c3d_bytes(("CH1 Raw", "CH2 Raw"), data, 1000.0)


def test_nan_samples_raise_a_signal_quality_error_naming_the_channel():
    with pytest.raises(SignalQualityError, match=r"'CH1 Raw' holds 10 non-finite samples"):
        analyze(nan_file())


def test_all_flat_channels_raise_and_one_flat_channel_does_not():
    flat = np.zeros((2, 5000))
    with pytest.raises(SignalQualityError, match="flat"):
        analyze(c3d_bytes(("CH1 Raw", "CH2 Raw"), flat, 1000.0))
    mixed = flat.copy()
    mixed[1] = np.random.default_rng(3).standard_normal(5000) * 1e-4
    result = analyze(c3d_bytes(("CH1 Raw", "CH2 Raw"), mixed, 1000.0))
    assert result.channels[0].signal_quality == 0.0
    assert result.channels[1].rms > 0


def test_rate_too_low_for_the_filter_and_missing_rate():
    data = np.random.default_rng(4).standard_normal((1, 5000)) * 1e-4
    with pytest.raises(SamplingRateError, match="below twice the band-pass top cut-off"):
        analyze(c3d_bytes(("EMG 1",), data, 500.0))
    # the same file analyses once the top cut-off fits the rate
    from emg_core import AnalysisOptions

    assert analyze(c3d_bytes(("EMG 1",), data, 500.0), options=AnalysisOptions(lowpass_hz=200))
    content = bytearray(c3d_bytes(("EMG 1",), data, 1000.0))
    rec = read_c3d(bytes(content))
    # overwrite ANALOG:RATE's float with 0 where the parameter section stores it
    needle = struct.pack("<f", 1000.0)
    pos = bytes(content).find(needle, 512, 512 * 10)
    while pos != -1:
        content[pos : pos + 4] = struct.pack("<f", 0.0)
        pos = bytes(content).find(needle, 512, 512 * 10)
    assert rec.rate == 1000.0
    with pytest.raises((SamplingRateError, C3DFormatError)):
        analyze(bytes(content))


def test_file_without_emg_channels():
    data = np.random.default_rng(4).standard_normal((2, 5000))
    content = c3d_bytes(("Fx1", "Fz1"), data, 1000.0, units=("N", "N"))
    with pytest.raises(NoEmgChannelsError, match="found no EMG channel") as info:
        analyze(content)
    assert "'Fx1'" in str(info.value)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(C3DFormatError, match="cannot read"):
        analyze(tmp_path / "missing.c3d")


def test_a_signalling_nan_sample_is_rejected_in_words_without_a_numpy_warning():
    # a signalling NaN warns "invalid value encountered in cast" on its way to float64; the
    # channel check then rejects it with a sentence, so the warning is only stderr noise
    import struct
    import warnings

    from emg_core import EmgError
    from emg_core.synthetic import c3d_bytes

    data = np.random.default_rng(1).standard_normal((2, 4000)) * 1e-5
    marker = 12345.5
    data[0, 1000] = marker
    content = bytearray(c3d_bytes(("CH1 Raw", "CH2 Raw"), data, 1000.0))
    at = content.find(struct.pack("<f", marker))
    assert at > 0
    content[at : at + 4] = struct.pack("<I", 0x7F800001)  # float32 signalling NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EmgError, match="non-finite"):
            analyze(bytes(content))
