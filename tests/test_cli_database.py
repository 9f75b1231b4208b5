"""Which database a CLI verb talks to, as a user meets it: real `python -m daemon` processes.

`status`, `requeue` and `migrate` use the database they are given (``--database-url`` or the
environment). Without one they refuse in a sentence naming what they read, unless ``--embedded``
asks for the embedded PostgreSQL in the current folder. A plain `migrate` on plain PostgreSQL says
what Supabase pieces are missing instead of failing halfway with a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.migrate import default_migrations_dir, migration_files
from tests.dbutil import connect, run_sync

REPO = Path(__file__).resolve().parent.parent
ALL = [p.name for p in migration_files(default_migrations_dir())]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any database or emgd setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMGD_")}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = str(REPO)
    return {**env, **extra}


def emgd(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "--log-format", "json", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


VERBS = {
    "status": ["status"],
    "requeue": ["requeue", "--failed"],
    "migrate": ["migrate", "--local-supabase"],
}


@pytest.mark.parametrize("verb", VERBS)
def test_without_a_database_a_verb_refuses_naming_what_it_reads(verb, tmp_path):
    result = emgd(*VERBS[verb], cwd=tmp_path, env=clean_env())
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, result.stderr
    for name in ("--database-url", "EMGD_DATABASE_URL", "DATABASE_URL", "--embedded"):
        assert name in message[0], (name, message[0])
    assert not (tmp_path / ".emgd").exists(), "nothing may be started without --embedded"


def test_embedded_migrate_status_and_requeue_use_the_current_folder(tmp_path):
    env = clean_env()
    migrate = emgd("migrate", "--embedded", cwd=tmp_path, env=env)
    assert migrate.returncode == 0, migrate.stderr
    done = [json.loads(line) for line in migrate.stderr.splitlines() if '"migrate_done"' in line]
    assert done and done[-1]["applied"] == ALL, "embedded means plain PostgreSQL: stand-in first"
    assert (tmp_path / ".emgd" / "pg" / "PG_VERSION").exists()

    status = emgd("status", "--embedded", "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert set(report["queue"].values()) == {0}
    assert report["oldest_pending"] is None and report["failures"] == []

    requeue = emgd("requeue", "--failed", "--embedded", cwd=tmp_path, env=env)
    assert requeue.returncode == 0, requeue.stderr
    assert requeue.stdout.strip() == "requeued 0 job(s)"
    assert not (tmp_path / ".emgd" / "pg" / "postmaster.pid").exists(), "server left running"


def test_status_reads_the_platform_database_url(database_factory, tmp_path):
    url = database_factory()
    status = emgd("status", "--json", cwd=tmp_path, env=clean_env(DATABASE_URL=url))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queue"]["pending"] == 0
    assert not (tmp_path / ".emgd").exists()


def test_every_database_verb_offers_the_same_database_options():
    from daemon.cli import build_parser

    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    seen = {}
    for verb in ("run", "upload", "migrate", "status", "requeue"):
        actions = {a.dest: a for a in subparsers.choices[verb]._actions}
        seen[verb] = tuple(
            (dest, tuple(actions[dest].option_strings), actions[dest].help, actions[dest].default)
            for dest in ("database_url", "embedded")
        )
    assert len(set(seen.values())) == 1, seen


async def _schemas(url: str) -> set[str]:
    conn = await connect(url)
    try:
        rows = await conn.fetch("select nspname from pg_namespace")
    finally:
        await conn.close()
    return {r["nspname"] for r in rows}


def test_plain_migrate_on_plain_postgresql_says_what_is_missing(database_factory, tmp_path):
    url = database_factory(template=False)
    before = run_sync(lambda: _schemas(url))
    result = emgd("migrate", "--database-url", url, cwd=tmp_path, env=clean_env())
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr
    assert "auth" in lines[0] and "storage" in lines[0] and "--local-supabase" in lines[0]
    assert run_sync(lambda: _schemas(url)) == before, "a refused migrate changes nothing"

    env = clean_env(EMGD_DATABASE_URL=url)
    fixed = emgd("migrate", "--local-supabase", cwd=tmp_path, env=env)
    assert fixed.returncode == 0, fixed.stderr
    # once the pieces exist, a plain migrate (as on Supabase) is fine and has nothing to do
    again = emgd("migrate", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert '"count": 0' in again.stderr
