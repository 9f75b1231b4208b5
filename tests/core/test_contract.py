"""The public surface: purity, options across a process boundary, result names, speed."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import emg_core
from emg_core import ANALYSIS_VERSION, AnalysisOptions, InvalidOptionsError, analyze
from emg_core.c3d import read_c3d
from emg_core.results import ChannelResult, Contraction
from emg_core.synthetic import ghostly_recording

REPO = Path(__file__).resolve().parents[2]


def test_emg_core_imports_no_daemon_asyncio_asyncpg_or_logging_setup():
    code = (
        "import sys, emg_core, emg_core.synthetic, emg_core.analysis\n"
        "bad = [m for m in ('daemon', 'asyncio', 'asyncpg', 'structlog', 'supabase')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
    for path in (REPO / "emg_core").glob("*.py"):
        text = path.read_text()
        assert "logging.basicConfig" not in text and "structlog.configure" not in text, path


def test_options_round_trip_through_json_and_pickle():
    opts = AnalysisOptions(
        mvc={"CH1 Raw": 0.0012}, mvc_percentage=60, include="Raw$", expected_contractions=10
    )
    again = AnalysisOptions.from_dict(json.loads(json.dumps(opts.to_dict())))
    assert again == opts
    assert pickle.loads(pickle.dumps(opts)) == opts
    assert AnalysisOptions.from_dict(None) == AnalysisOptions()
    with pytest.raises(TypeError):
        opts.mvc["CH2 Raw"] = 1.0  # frozen all the way down


@pytest.mark.parametrize(
    "bad",
    [
        {"highpass_hz": 500.0},
        {"mvc": {"CH1 Raw": -1.0}},
        {"expected_contractions": 0},
        {"no_such_option": 1},
        {"onset_sd": 1.0, "offset_sd": 2.0},
    ],
)
def test_invalid_options_raise_a_readable_typed_error(bad):
    with pytest.raises(InvalidOptionsError) as info:
        AnalysisOptions.from_dict(bad)
    assert str(info.value).startswith(
        ("invalid analysis options", "unknown analysis options", "the MVC")
    )


def test_result_json_uses_the_contract_names():
    content, truth = ghostly_recording(seed=6, duration_s=30, rate=990)
    result = analyze(content, name=truth.file_name)
    data = json.loads(json.dumps(result.to_dict()))
    assert {"file", "analysis_version", "processing", "channels"} <= set(data)
    assert data["file"] == truth.file_name
    assert data["analysis_version"] == ANALYSIS_VERSION == emg_core.ANALYSIS_VERSION
    channel = data["channels"][0]
    assert set(channel) == {f for f in ChannelResult.__dataclass_fields__}
    assert set(channel["contractions"][0]) == {f for f in Contraction.__dataclass_fields__}
    assert data["processing"]["filter"]["low_hz"] == 20.0
    assert data["processing"]["envelope"]["window_ms"] == 50.0
    assert data["processing"]["options"] == AnalysisOptions().to_dict()
    assert data["recorded_at"].startswith("2023-03-21T17:50")
    assert data["metadata"]["game_name"] == "Ghostly"


def test_same_input_gives_the_same_result():
    content, _ = ghostly_recording(seed=10, duration_s=20, rate=1000)
    assert analyze(content) == analyze(content)


def test_path_and_bytes_give_the_same_result(tmp_path):
    content, truth = ghostly_recording(seed=12, duration_s=15, rate=2000)
    path = tmp_path / truth.file_name
    path.write_bytes(content)
    from_path = analyze(path)
    assert from_path.file == truth.file_name
    assert from_path.channels == analyze(content, name=truth.file_name).channels


def test_synthetic_three_minute_recording_has_the_length_asked_for():
    # How fast it is generated is a benchmark's question, not a test's (CI machines are loaded).
    content, truth = ghostly_recording(seed=1, duration_s=180, rate=990)
    assert truth.duration_s == pytest.approx(180.0)
    assert truth.n_samples == 180 * 990
    assert read_c3d(content).n_samples == truth.n_samples
