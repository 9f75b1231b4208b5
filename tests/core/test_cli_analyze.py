"""``emgd analyze``: table, JSON, plot, and exit 2 with one stderr line on a bad file."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon import cmd_analyze, cmd_demo
from emg_core import analyze
from emg_core.analysis import channel_traces
from emg_core.synthetic import write_ghostly

REPO = Path(__file__).resolve().parents[2]


def emgd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "--log-format", "json", "analyze", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("cli") / "Ghostly_Emg_20230321_17-50-17-0881.c3d"
    truth = write_ghostly(path, seed=31, duration_s=40, rate=990)
    return path, truth


def test_table_lists_each_channel_with_its_counts(recording):
    path, truth = recording
    proc = emgd(str(path))
    assert proc.returncode == 0, proc.stderr
    for label in truth.channels:
        row = next(line for line in proc.stdout.splitlines() if line.startswith(label))
        assert int(row.split()[2]) == len(truth.bursts_for(label))


@pytest.fixture(scope="module")
def result(recording):
    path, _ = recording
    return analyze(str(path))


def _row(text: str, label: str) -> list[str]:
    """The table row of ``label``, split into cells after its (two-word) name."""
    row = next(line for line in text.splitlines() if line.startswith(label + " "))
    return row[len(label) :].split()


def _notes(text: str, label: str) -> list[str]:
    """The indented lines under ``label:`` below the table."""
    lines = text.splitlines()
    start = lines.index(f"{label}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("    ")), len(lines))
    return [line.strip() for line in lines[start:end]]


def test_table_shows_volts_as_microvolts_and_an_estimated_mvc_as_relative(recording, result):
    path, _ = recording
    proc = emgd(str(path))
    assert proc.returncode == 0, proc.stderr
    for ch in result.channels:
        assert ch.unit == "V"
        cells = _row(proc.stdout, ch.name)
        assert cells[5] == "\u00b5V"
        assert float(cells[6]) == pytest.approx(ch.mvc_value * 1e6, abs=0.5)
        assert float(cells[7]) == pytest.approx(ch.rest_level * 1e6, rel=5e-3)
        assert float(cells[8]) == pytest.approx(ch.onset_level * 1e6, rel=5e-3)
        notes = _notes(proc.stdout, ch.name)
        assert notes[0].startswith(f"MVC {ch.mvc_value * 1e6:.0f} \u00b5V, {ch.mvc_source}*")
    assert (
        "* MVC estimated from this session: \u226575 % MVC means 75 % of this session's "
        "strongest effort" in proc.stdout
    )


def test_a_given_mvc_has_no_estimate_footnote(result):
    given = dataclasses.replace(
        result,
        channels=tuple(
            dataclasses.replace(ch, mvc_method="given", mvc_source=None) for ch in result.channels
        ),
    )
    text = cmd_analyze.render(given)
    assert "estimated from this session" not in text
    assert _notes(text, result.channels[0].name)[0].startswith("MVC ")
    assert ", given; threshold" in _notes(text, result.channels[0].name)[0]


def test_other_units_convert_or_stay_as_they_are(result):
    ch = result.channels[0]
    in_mv = dataclasses.replace(ch, unit="mV", mvc_value=0.45, rest_level=0.004)
    force = dataclasses.replace(result.channels[1], unit="N", mvc_value=12.5)
    text = cmd_analyze.render(dataclasses.replace(result, channels=(in_mv, force)))
    assert _row(text, ch.name)[5:8] == ["\u00b5V", "450", "4"]
    assert _row(text, force.name)[5:7] == ["N", "12.5"]


def test_an_unusable_channel_shows_dashes_and_why_and_every_warning(result):
    usable, other = result.channels
    warnings = ("the electrode was off for most of the session", "38 s of artefact masked")
    none = dict.fromkeys(
        [
            "mvc_value", "mvc_threshold", "contractions_total", "contractions_good",
            "contractions_mvc_compliant", "contractions_duration_compliant", "completion_rate",
            "intensity_rate", "duration_rate", "compliance_rate", "time_under_tension_ms",
            "mpf_hz", "mdf_hz", "mdf_slope_pct_per_s", "rest_level", "onset_level",
            "offset_level", "mvc_source", "mvc_start_ms", "mvc_end_ms",
        ]
    )  # fmt: skip
    bad = dataclasses.replace(
        other,
        usable=False,
        warnings=warnings,
        masked_samples=75_000,
        masked_s=37.9,
        contractions=(),
        fatigue_reason="no usable contractions",
        **none,
    )
    hum = dataclasses.replace(
        usable, mains_hz=49.5, mains_fraction=0.3, mains_removed=True, warnings=("hum removed",)
    )
    text = cmd_analyze.render(dataclasses.replace(result, channels=(hum, bad)))

    cells = _row(text, bad.name)
    assert cells[:5] == ["-"] * 5 and cells[6:9] == ["-"] * 3
    assert next(line for line in text.splitlines() if line.startswith(bad.name + " ")).endswith(
        "   unusable (see its warnings)"
    )
    notes = _notes(text, bad.name)
    assert notes[0] == "no counts: the signal cannot be trusted"
    assert "masked 37.9 s of artefact" in notes[2]
    assert "fatigue: no usable contractions" in notes
    assert [n for n in notes if n.startswith("! ")] == [f"! {w}" for w in warnings]
    # warnings sit under the table, indented under their channel
    assert f"    ! {warnings[0]}" in text.splitlines()
    hum_notes = _notes(text, hum.name)
    assert "hum 49.5 Hz removed (30% of in-band power)" in hum_notes[1]
    assert hum_notes[-1] == "! hum removed"


def test_the_plot_draws_an_unusable_channel_too(recording, result, tmp_path):
    path, _ = recording
    first, second = result.channels
    bad = dataclasses.replace(
        second, usable=False, warnings=("no signal",), mvc_value=None, mvc_threshold=None,
        rest_level=None, onset_level=None, offset_level=None, contractions=(),
    )  # fmt: skip
    traces = channel_traces(str(path))
    masked = traces[first.name].masked.copy()
    masked[1000:3000] = True  # shaded grey, and left out of the panels' ranges
    traces[first.name] = dataclasses.replace(traces[first.name], masked=masked)
    out = tmp_path / "plot.png"
    cmd_analyze.plot(dataclasses.replace(result, channels=(first, bad)), traces, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_table_shows_microvolts_dashes_and_warnings():
    row = {
        "id": "s1", "object_name": "p/rec.c3d", "status": "completed", "error": None,
        "patient": "Ada", "channel": "CH1 Raw", "unit": "V", "usable": True, "warnings": [],
        "contractions_total": 3, "contractions_good": 2, "mvc_value": 4.5e-4, "mpf_hz": 95.0,
        "mdf_hz": None, "contractions_mvc_compliant": 2, "mvc_method": "patient_settings",
    }  # fmt: skip
    bad = {
        **row, "channel": "CH2 Raw", "usable": False, "warnings": ["electrode off"],
        "contractions_total": None, "contractions_good": None, "mvc_value": None,
        "contractions_mvc_compliant": None, "mvc_method": "session_estimate",
    }  # fmt: skip
    lines = cmd_demo.render([row, bad], {}).splitlines()
    assert lines[2].split()[5:] == ["3", "-", "2", "450", "\u00b5V", "95.0", "-", "2", "therapist"]
    assert lines[3].split()[5:] == [
        "-", "-", "-", "-", "95.0", "-", "-", "session", "(relative)", "unusable",
    ]  # fmt: skip
    assert lines[-2:] == ["warnings:", "    rec.c3d CH2 Raw: electrode off"]


def test_json_has_the_contract_names_and_honours_options(recording):
    path, _truth = recording
    proc = emgd(str(path), "--json", "--mvc", "CH1 Raw=0.002", "--expected", "8")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["file"] == path.name
    ch1 = data["channels"][0]
    assert ch1["name"] == "CH1 Raw" and ch1["mvc_value"] == 0.002 and ch1["mvc_method"] == "given"
    assert ch1["mvc_threshold"] == pytest.approx(0.0015)
    assert ch1["expected_contractions"] == 8
    assert data["channels"][1]["mvc_method"] == "session_estimate"
    assert set(ch1["contractions"][0]) >= {
        "start_ms", "end_ms", "duration_ms", "peak_amplitude", "mean_amplitude",
        "meets_mvc", "meets_duration", "is_good",
    }  # fmt: skip


def test_plot_writes_a_png(recording, tmp_path):
    path, _ = recording
    out = tmp_path / "plot.png"
    proc = emgd(str(path), "--plot", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "empty"), (b"garbage" * 100, "not a C3D file"), (None, "truncated")],
    ids=["empty", "garbage", "truncated"],
)
def test_bad_file_exits_2_with_one_line_and_no_traceback(recording, tmp_path, content, needle):
    path, _ = recording
    bad = tmp_path / "bad.c3d"
    bad.write_bytes(path.read_bytes()[:20_000] if content is None else content)
    proc = emgd(str(bad))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and str(bad) in lines[0]


def test_bad_option_exits_2(recording):
    path, _ = recording
    proc = emgd(str(path), "--mvc", "CH1 Raw=lots")
    assert proc.returncode == 2 and "LABEL=VALUE" in proc.stderr


def test_channel_targets_on_the_command_line(recording):
    path, _truth = recording
    proc = emgd(
        str(path),
        "--json",
        "--channel",
        "CH1 Raw:mvc_value=2",
        "--channel",
        "CH1 Raw:mvc_unit=mV",
        "--channel",
        "*:expected_contractions=5",
        "--channel",
        "CH2 Raw:duration_threshold_ms=750",
    )
    assert proc.returncode == 0, proc.stderr
    ch1, ch2 = json.loads(proc.stdout)["channels"][:2]
    assert ch1["mvc_value"] == pytest.approx(0.002) and ch1["mvc_method"] == "given"
    assert ch1["expected_contractions"] == 5 and ch2["expected_contractions"] == 5
    assert ch2["duration_threshold_ms"] == 750 and ch2["mvc_method"] == "session_estimate"
    bad = emgd(str(path), "--channel", "CH1 Raw:colour=red")
    assert bad.returncode == 2 and "LABEL:FIELD=VALUE" in bad.stderr


def test_a_processing_record_reproduces_the_analysis(recording, tmp_path):
    """What the daemon stored for a session (its ``processing``) is enough to run it again."""
    path, _truth = recording
    options = {
        "mvc_percentage": 60.0,
        "channels": {
            "CH1 Raw": {"mvc_value": 0.9, "mvc_unit": "mV", "mvc_method": "patient_settings"},
            "CH2 Raw": {"mvc_value": 0.7, "mvc_unit": "mV", "mvc_method": "reference_session"},
        },
    }
    from emg_core import AnalysisOptions

    first = analyze(str(path), options=AnalysisOptions.from_dict(options))
    record = tmp_path / "processing.json"
    record.write_text(json.dumps(first.to_dict()["processing"]))
    proc = emgd(str(path), "--json", "--options", str(record))
    assert proc.returncode == 0, proc.stderr
    again = json.loads(proc.stdout)
    assert again["channels"] == json.loads(json.dumps(first.to_dict()["channels"]))
    assert [c["mvc_method"] for c in again["channels"][:2]] == [
        "patient_settings",
        "reference_session",
    ]
    # a whole stored result works too, and a flag still overrides the file
    whole = tmp_path / "result.json"
    whole.write_text(json.dumps(first.to_dict()))
    proc = emgd(str(path), "--json", "--options", str(whole), "--mvc-percentage", "90")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["channels"][0]["mvc_threshold"] == pytest.approx(0.9e-3 * 0.9)
    missing = emgd(str(path), "--options", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
