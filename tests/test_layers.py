"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and would catch a breach."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from tests.toolchain import REPO, command, copy_packages, run_on

PURE = "emg_core stays pure: no daemon, event loop, database driver or logging setup"
TOP = "the CLI verbs (daemon.cmd_*) are the top layer"


#: without the lint-imports script: its entry point, run by this interpreter
_LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def lint_imports() -> list[str]:
    return command("lint-imports", ["-c", _LINT_IMPORTS])


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the tree in cwd, not an installed emgd, is what gets analysed
    return run_on(cwd, [*lint_imports(), "--no-cache", *args], timeout=300)


def contracts() -> dict[str, dict]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["name"]: c for c in config["contracts"]}


def test_contracts_are_kept():
    proc = run(REPO)
    assert proc.returncode == 0, f"lint-imports failed:\n{proc.stdout}{proc.stderr}"
    assert f"{PURE} KEPT" in proc.stdout
    assert f"{TOP} KEPT" in proc.stdout


def test_every_verb_module_is_in_the_top_layer():
    # import-linter has no `cmd_*` wildcard, so a new verb must be added to the list by hand
    on_disk = {f"daemon.{p.stem}" for p in (REPO / "daemon").glob("cmd_*.py")}
    assert set(contracts()[TOP]["forbidden_modules"]) == on_disk


def test_a_breach_of_each_contract_fails(tmp_path):
    copy_packages(tmp_path)
    with (tmp_path / "emg_core" / "filters.py").open("a") as f:
        f.write("\nimport structlog  # noqa: E402\n")
    with (tmp_path / "daemon" / "worker.py").open("a") as f:
        f.write("\nfrom daemon.cmd_upload import upload  # noqa: E402\n")

    proc = run(tmp_path)

    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{PURE} BROKEN" in out
    assert "emg_core is not allowed to import structlog" in out
    assert "emg_core.filters -> structlog" in out
    assert f"{TOP} BROKEN" in out
    assert "daemon.worker is not allowed to import daemon.cmd_upload" in out
