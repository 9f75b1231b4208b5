"""``emgd migrate``: applies the stand-in and every migration once, in order, even when raced."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from daemon.migrate import apply_migrations, default_migrations_dir, migration_files
from tests.dbutil import connect, run_sync

REPO = Path(__file__).resolve().parent.parent
ALL = [p.name for p in migration_files(default_migrations_dir())]

FINGERPRINT = """
select md5(string_agg(x, ',' order by x)) from (
    select 'rel:' || n.nspname || '.' || c.relname || ':' || c.relkind::text
           || ':' || c.relrowsecurity::text
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('public', 'emgd', 'auth', 'storage', 'supabase_migrations')
    union all
    select 'fn:' || n.nspname || '.' || p.proname || ':' || md5(p.prosrc)
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname in ('public', 'emgd', 'auth', 'storage')
    union all
    select 'pol:' || schemaname || '.' || tablename || '.' || policyname from pg_policies
    union all
    select 'trg:' || tgrelid::regclass::text || '.' || tgname from pg_trigger where not tgisinternal
    union all
    select 'acl:' || c.relname || ':' || coalesce(c.relacl::text, '')
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('public', 'emgd', 'storage')
    union all
    select 'mig:' || version || ':' || name from supabase_migrations.schema_migrations
) t(x)
"""


@pytest.fixture
def empty_db_url(database_factory) -> str:
    return database_factory(template=False)


async def fingerprint(url: str) -> str:
    conn = await connect(url)
    try:
        return await conn.fetchval(FINGERPRINT)
    finally:
        await conn.close()


def test_migration_files_are_named_for_supabase():
    assert ALL, "no migrations found"
    for name in ALL:
        assert len(name.split("_", 1)[0]) == 14
    assert sorted(ALL) == ALL


async def test_twice_on_a_fresh_database_is_a_no_op_the_second_time(empty_db_url):
    first = await apply_migrations(empty_db_url, local_supabase=True)
    assert first == ALL
    before = await fingerprint(empty_db_url)
    second = await apply_migrations(empty_db_url, local_supabase=True)
    assert second == []
    assert await fingerprint(empty_db_url) == before


async def test_two_daemons_starting_at_once_apply_each_migration_once(empty_db_url):
    a, b = await asyncio.gather(
        apply_migrations(empty_db_url, local_supabase=True),
        apply_migrations(empty_db_url, local_supabase=True),
    )
    assert sorted(a + b) == ALL
    assert [] in (a, b)
    conn = await connect(empty_db_url)
    try:
        rows = await conn.fetch(
            "select name from supabase_migrations.schema_migrations order by version"
        )
    finally:
        await conn.close()
    assert [r["name"] for r in rows] == [n.split("_", 1)[1].removesuffix(".sql") for n in ALL]


async def test_a_failing_migration_leaves_nothing_of_itself(empty_db_url, tmp_path):
    (tmp_path / "20200101000000_good.sql").write_text("create table public.good (id int);")
    (tmp_path / "20200101000001_bad.sql").write_text(
        "create table public.half (id int);\nselect 1/0;"
    )
    with pytest.raises(asyncpg.DivisionByZeroError):
        await apply_migrations(empty_db_url, migrations_dir=tmp_path)
    conn = await connect(empty_db_url)
    try:
        assert await conn.fetchval("select to_regclass('public.good') is not null")
        assert await conn.fetchval("select to_regclass('public.half') is null")
        versions = await conn.fetch("select version from supabase_migrations.schema_migrations")
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == ["20200101000000"]
    # fixed file: the next run applies only it
    (tmp_path / "20200101000001_bad.sql").write_text("create table public.half (id int);")
    applied = await apply_migrations(empty_db_url, migrations_dir=tmp_path)
    assert applied == ["20200101000001_bad.sql"]


def test_badly_named_files_are_refused(tmp_path):
    (tmp_path / "001_init.sql").write_text("select 1;")
    with pytest.raises(ValueError, match="YYYYMMDDHHMMSS"):
        migration_files(tmp_path)


async def test_sessions_join_the_realtime_publication_when_it_exists(empty_db_url):
    conn = await connect(empty_db_url)
    try:
        await conn.execute("create publication supabase_realtime")
        await apply_migrations(empty_db_url, local_supabase=True)
        tables = await conn.fetch(
            "select schemaname, tablename from pg_publication_tables"
            " where pubname = 'supabase_realtime'"
        )
    finally:
        await conn.close()
    assert [tuple(t) for t in tables] == [("public", "sessions")]


def _run_migrate_process(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EMGD_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_migrate_as_a_process_reads_the_env_and_is_idempotent(database_factory):
    url = database_factory(template=False)
    code = (
        "import argparse, sys\n"
        "from daemon import migrate\n"
        "p = argparse.ArgumentParser()\n"
        "migrate.configure(p)\n"
        "sys.exit(migrate.main(p.parse_args(sys.argv[1:])))\n"
    )
    first = _run_migrate_process(["-c", code, "--local-supabase"], url)
    assert first.returncode == 0, first.stderr + first.stdout
    before = run_sync(lambda: fingerprint(url))
    second = _run_migrate_process(["-c", code, "--local-supabase"], url)
    assert second.returncode == 0, second.stderr + second.stdout
    assert "count=0" in second.stdout + second.stderr or '"count": 0' in second.stdout
    assert run_sync(lambda: fingerprint(url)) == before


def test_migrate_without_a_database_url_says_so():
    code = (
        "import argparse, sys\n"
        "from daemon import migrate\n"
        "p = argparse.ArgumentParser()\n"
        "migrate.configure(p)\n"
        "sys.exit(migrate.main(p.parse_args([])))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("EMGD_DATABASE_URL", "DATABASE_URL")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "EMGD_DATABASE_URL" in proc.stderr and "--embedded" in proc.stderr


def test_emgd_migrate_cli_twice(database_factory):
    url = database_factory(template=False)
    first = _run_migrate_process(["-m", "daemon", "migrate", "--local-supabase"], url)
    assert first.returncode == 0, first.stderr + first.stdout
    before = run_sync(lambda: fingerprint(url))
    second = _run_migrate_process(
        ["-m", "daemon", "migrate", "--local-supabase", "--database-url", url], url
    )
    assert second.returncode == 0, second.stderr + second.stdout
    assert run_sync(lambda: fingerprint(url)) == before


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.mark.docker
def test_migrations_on_a_testcontainers_postgres():
    if not _docker_available():
        pytest.skip("no Docker engine reachable (testcontainers needs one)")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15-alpine", driver=None) as pg:
        url = pg.get_connection_url()
        assert run_sync(lambda: apply_migrations(url, local_supabase=True)) == ALL
        assert run_sync(lambda: apply_migrations(url, local_supabase=True)) == []
