"""``emgd demo`` from nothing: every session completes with its report picture, and the
therapist's MVC for one patient changes exactly that patient's results."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_shows_pictures_and_a_therapists_mvc_changing_results(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "--log-format", "json", "demo", "--sessions", "4",
         "--duration", "30", "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    first, _, second = out.partition("Therapist Tess sets Patient Ada's MVC")
    assert second, out
    # before: every MVC is the session's own; after: Ada's come from her therapist, Bo's stay
    table = [line for line in first.splitlines() if " completed " in line]
    after = [line for line in second.splitlines() if " completed " in line]
    assert len(table) == len(after) == 8
    assert all(line.endswith("session (relative)") for line in table)
    assert all(line.endswith("therapist") for line in after if line.startswith("Patient Ada"))
    assert all(
        line.endswith("session (relative)") for line in after if line.startswith("Patient Bo")
    )
    assert {line for line in after if line.startswith("Patient Bo")} <= set(table)
    # a picture per session (Ada's redrawn), each a PNG of the size for two channels
    pictures = sorted((tmp_path / "storage").rglob("reports/*.png"))
    assert len(pictures) == 4
    for picture in pictures:
        data = picture.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (1400, 90 + 2 * 300)
    assert "report pictures (4)" in first
