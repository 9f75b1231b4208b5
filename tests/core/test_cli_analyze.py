"""``emgd analyze``: table, JSON, plot, and exit 2 with one stderr line on a bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert data["channels"][1]["mvc_method"] == "estimated_best_500ms"
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
