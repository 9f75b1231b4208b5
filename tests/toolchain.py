"""The project's checkers (ruff, mypy, import-linter) as the tests run them, on this tree or on
a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def command(name: str, fallback: list[str]) -> list[str]:
    """The console script ``name`` of this interpreter's environment, else the one on PATH, else
    ``fallback`` (arguments after ``sys.executable``)."""
    beside_python = Path(sys.executable).with_name(name)
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which(name)
    if found:
        return [found]
    return [sys.executable, *fallback]


def copy_packages(dest: Path) -> None:
    """Copy emg_core, daemon and pyproject.toml into ``dest``, to break a copy, not the tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("emg_core", "daemon"):
        shutil.copytree(REPO / package, dest / package, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")


def run_on(cwd: Path, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a checker in ``cwd`` on the packages there, not on an installed emgd."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
