"""emgd installed from its wheel, away from any checkout, migrates a database and analyses a file.

The wheel is built from exactly what the Dockerfile's build stage copies (so the image and this
test agree on what a build needs), offline and without build isolation, then installed with
``--no-deps`` into a fresh virtualenv outside the checkout. The dependencies come from the
running environment through a ``.pth`` line, which adds its site-packages as a plain path (its
own ``.pth`` files, such as an editable emgd, are not processed), so only the wheel provides
``daemon`` and ``emg_core``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from emg_core.synthetic import ghostly_recording
from tests.dbutil import connect, run_sync
from tests.test_dockerfile import instructions

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = sorted(p.name for p in (REPO / "supabase" / "migrations").glob("*.sql"))


def run(cmd: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=120, **kwargs
    )


def build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY in the Dockerfile's first stage."""
    copies, froms = [], 0
    for keyword, arguments in instructions():
        froms += keyword == "FROM"
        if froms == 1 and keyword == "COPY":
            *sources, dest = arguments.split()
            copies.append((sources, dest))
    return copies


def copy_build_context(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, dest in build_stage_copies():
        for source in sources:
            src = REPO / source
            to = target / dest
            if dest.endswith("/") or len(sources) > 1:
                to = to / src.name
            to.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, to, ignore=ignore)
            else:
                shutil.copy2(src, to)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv outside the checkout with only the wheel installed; its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    src, dist, venv = root / "src", root / "dist", root / "venv"
    copy_build_context(src)
    built = run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--wheel-dir", dist, src),
        ]
    )
    # setuptools >= 70.1 (a dev dependency) builds wheels by itself; without it this must fail
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("emgd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        packaged = {
            Path(n).name: zf.read(n) for n in zf.namelist() if n.startswith("daemon/migrations/")
        }
        assert "daemon/sql/local_supabase.sql" in zf.namelist()
    assert sorted(packaged) == MIGRATIONS
    for name, data in packaged.items():
        assert data == (REPO / "supabase" / "migrations" / name).read_bytes(), name

    made = run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    put = run(
        [
            *(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"),
            *("--no-index", "--disable-pip-version-check", wheel),
        ]
    )
    assert put.returncode == 0, put.stdout + put.stderr
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(site.stdout.strip()) / "emgd_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv / "bin"


def outside_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMGD_", "PYTHON"))}
    env.pop("DATABASE_URL", None)
    env["HOME"] = str(tmp_path)
    return env


def test_the_wheel_provides_the_code_not_the_checkout(installed, tmp_path):
    probe = run(
        [installed / "python", "-c", "import daemon, emg_core; print(daemon.__file__)"],
        cwd=tmp_path,
        env=outside_env(tmp_path),
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(installed.parent), probe.stdout


def test_installed_emgd_migrates_a_fresh_database(installed, database_factory, tmp_path):
    url = database_factory(template=False)
    migrate = run(
        [
            *(installed / "emgd", "--log-format", "json", "migrate", "--local-supabase"),
            *("--database-url", url),
        ],
        cwd=tmp_path,
        env=outside_env(tmp_path),
    )
    assert migrate.returncode == 0, migrate.stderr
    done = [json.loads(line) for line in migrate.stderr.splitlines() if '"migrate_done"' in line]
    assert done and done[-1]["applied"] == MIGRATIONS

    async def recorded() -> list[str]:
        conn = await connect(url)
        try:
            rows = await conn.fetch(
                "select version || '_' || name || '.sql' as file"
                " from supabase_migrations.schema_migrations order by version"
            )
            assert await conn.fetchval("select to_regclass('emgd.jobs') is not null")
        finally:
            await conn.close()
        return [r["file"] for r in rows]

    assert run_sync(recorded) == MIGRATIONS


def test_installed_emgd_analyses_a_file(installed, tmp_path):
    data, _ = ghostly_recording(seed=3, duration_s=10.0)
    path = tmp_path / "Ghostly_Emg_20261125_10-00-00-0000.c3d"
    path.write_bytes(data)
    analyse = run(
        [installed / "emgd", "analyze", path, "--json"], cwd=tmp_path, env=outside_env(tmp_path)
    )
    assert analyse.returncode == 0, analyse.stderr
    result = json.loads(analyse.stdout)
    assert result["channels"], result
