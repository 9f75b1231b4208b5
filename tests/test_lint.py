"""Lint and format run inside the test command, so CI and a developer's pytest agree."""

from __future__ import annotations

import subprocess

import pytest

from tests.toolchain import REPO, command


def ruff() -> list[str]:
    return command("ruff", ["-m", "ruff"])


@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"]
)
def test_ruff(args):
    proc = subprocess.run(
        [*ruff(), *args, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"ruff {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
