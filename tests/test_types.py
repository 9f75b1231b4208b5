"""emg_core and daemon type-check under mypy --strict ([tool.mypy] in pyproject.toml), and a type
error or an unannotated function in either would fail the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.toolchain import REPO, copy_packages, run_on


def mypy(cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    # the tree in cwd (its pyproject.toml, its packages), not an installed emgd, is checked
    return run_on(cwd, [sys.executable, "-m", "mypy", "--cache-dir", str(cache)], timeout=600)


def test_the_packages_type_check_strictly():
    proc = mypy(REPO, REPO / ".mypy_cache")
    assert proc.returncode == 0, f"mypy found errors:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout


def test_a_type_error_and_a_missing_annotation_fail(tmp_path):
    copy_packages(tmp_path)
    with (tmp_path / "emg_core" / "metadata.py").open("a") as f:
        f.write('\n\ndef _level() -> int:\n    return "3"\n')
    with (tmp_path / "daemon" / "settings.py").open("a") as f:
        f.write("\n\ndef _untyped(value):\n    return value\n")

    proc = mypy(tmp_path, tmp_path / ".mypy_cache")

    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "emg_core/metadata.py" in out and "Incompatible return value type" in out
    assert "daemon/settings.py" in out and "missing a type annotation" in out
