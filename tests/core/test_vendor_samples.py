"""Where the vendor C3D samples are found: EMGD_VENDOR_SAMPLES, else shared/c3d beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import helpers

REPO = Path(__file__).resolve().parents[2]


def test_the_variable_names_the_folder(tmp_path, monkeypatch):
    (tmp_path / "Vicon.c3d").write_bytes(b"not read here")
    monkeypatch.setenv("EMGD_VENDOR_SAMPLES", str(tmp_path))
    assert helpers.vendor_dir() == tmp_path
    assert helpers.vendor_file("Vicon.c3d") == tmp_path / "Vicon.c3d"


def test_without_the_variable_the_folder_beside_the_repository(monkeypatch):
    monkeypatch.delenv("EMGD_VENDOR_SAMPLES", raising=False)
    assert helpers.vendor_dir() == REPO.parent / "shared" / "c3d"


def test_a_missing_sample_skips_and_says_how_to_point_at_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EMGD_VENDOR_SAMPLES", str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match="EMGD_VENDOR_SAMPLES") as skipped:
        helpers.vendor_file("Vicon.c3d")
    assert str(tmp_path / "Vicon.c3d") in str(skipped.value)
