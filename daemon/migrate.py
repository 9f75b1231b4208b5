"""``emgd migrate``: apply supabase/migrations (and, locally, the Supabase stand-in) once each.

Applied files are recorded in ``supabase_migrations.schema_migrations``, the table the Supabase
CLI itself keeps, so a project migrated with ``supabase db push`` and one migrated by emgd agree
on what has run. A transaction-independent advisory lock serialises daemons that start at the
same moment; each file runs in its own transaction together with its bookkeeping row.

``supabase/migrations/`` is the one copy of the migrations: the Supabase CLI reads it, a source
checkout reads it, and the wheel carries it as the package data ``daemon/migrations`` (mapped in
pyproject.toml at build time), so an installed ``emgd`` needs no checkout. The stand-in ships as
``daemon/sql/local_supabase.sql``. Both are read through ``importlib.resources``.
"""

from __future__ import annotations

import argparse
import os
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import structlog

from daemon.dbconnect import add_database_arguments

log = structlog.get_logger(__name__)

# Arbitrary but fixed: every emgd process must agree on it. ("emgd" in ASCII, then "mig".)
ADVISORY_LOCK_KEY = 0x656D6764_6D6967
MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[A-Za-z0-9_.-]+)\.sql$")
LOCAL_SUPABASE_SQL = resources.files("daemon") / "sql" / "local_supabase.sql"
_PACKAGED_MIGRATIONS = resources.files("daemon") / "migrations"
_CHECKOUT_MIGRATIONS = Path(__file__).resolve().parent.parent / "supabase" / "migrations"

# What emgd's migrations build on that Supabase provides and plain PostgreSQL lacks (the stand-in
# creates each), asked when a migration fails for want of an object. A new migration that uses
# another Supabase object adds it here.
_SUPABASE_PIECES = """
select array_remove(array[
    case when to_regnamespace('auth') is null then 'schema auth' end,
    case when to_regclass('auth.users') is null then 'auth.users' end,
    case when to_regprocedure('auth.uid()') is null then 'auth.uid()' end,
    case when to_regnamespace('storage') is null then 'schema storage' end,
    case when to_regclass('storage.buckets') is null then 'storage.buckets' end,
    case when to_regclass('storage.objects') is null then 'storage.objects' end,
    case when to_regrole('anon') is null then 'role anon' end,
    case when to_regrole('authenticated') is null then 'role authenticated' end,
    case when to_regrole('service_role') is null then 'role service_role' end
], null)
"""
# invalid schema name, undefined object (a role), table, function
_UNDEFINED_SQLSTATES = frozenset({"3F000", "42704", "42P01", "42883"})
_HAS_BOOKKEEPING = "select to_regclass('supabase_migrations.schema_migrations') is not null"
_APPLIED = "select version from supabase_migrations.schema_migrations"

_BOOKKEEPING = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text not null primary key,
    statements text[],
    name text
);
"""


class SupabaseMissingError(RuntimeError):
    """A migration needs Supabase pieces this database lacks (plain PostgreSQL)."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__(
            "this database lacks the Supabase pieces the migrations build on ("
            + ", ".join(missing)
            + "), as plain PostgreSQL does; pass --local-supabase to create a stand-in for them "
            "first (never on a Supabase project)"
        )


def default_migrations_dir() -> Traversable:
    """EMGD_MIGRATIONS_DIR, else the migrations shipped in the package, else the checkout's."""
    override = os.environ.get("EMGD_MIGRATIONS_DIR")
    if override:
        return Path(override)
    if _PACKAGED_MIGRATIONS.is_dir():
        return _PACKAGED_MIGRATIONS
    return _CHECKOUT_MIGRATIONS


def migration_files(migrations_dir: Traversable) -> list[Traversable]:
    """Migration files in the order Supabase applies them (by their timestamp prefix)."""
    if not migrations_dir.is_dir():
        raise FileNotFoundError(f"migrations directory not found: {migrations_dir}")
    files = [p for p in migrations_dir.iterdir() if p.is_file() and p.name.endswith(".sql")]
    bad = sorted(p.name for p in files if not MIGRATION_NAME.match(p.name))
    if bad:
        raise ValueError(f"migration files must be named <YYYYMMDDHHMMSS>_<name>.sql: {bad}")
    return sorted(files, key=lambda p: p.name)


async def apply_migrations(
    dsn: str, *, local_supabase: bool = False, migrations_dir: Traversable | None = None
) -> list[str]:
    """Apply the stand-in (if asked) and every migration not yet recorded; return those applied.

    A migration that fails for want of a schema, role, table or function, on a database that
    lacks the Supabase pieces emgd's migrations need, raises ``SupabaseMissingError`` (which
    names them) instead; the bookkeeping table is created with the first migration, so a database
    refused at the first one is left as it was.
    """
    import asyncpg

    files = migration_files(migrations_dir or default_migrations_dir())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("select pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            if local_supabase:
                async with conn.transaction():
                    await conn.execute(LOCAL_SUPABASE_SQL.read_text(encoding="utf-8"))
                log.info("local_supabase_ready")
            done: set[str] = set()
            if await conn.fetchval(_HAS_BOOKKEEPING):
                done = {r["version"] for r in await conn.fetch(_APPLIED)}
            applied: list[str] = []
            for path in files:
                match = MIGRATION_NAME.match(path.name)
                assert match is not None
                version = match["version"]
                if version in done:
                    continue
                sql = path.read_text(encoding="utf-8")
                try:
                    async with conn.transaction():
                        await conn.execute(_BOOKKEEPING)
                        await conn.execute(sql)
                        await conn.execute(
                            "insert into supabase_migrations.schema_migrations"
                            " (version, statements, name) values ($1, $2, $3)",
                            version,
                            [sql],
                            match["name"],
                        )
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate in _UNDEFINED_SQLSTATES and not local_supabase:
                        missing = await conn.fetchval(_SUPABASE_PIECES)
                        if missing:
                            raise SupabaseMissingError(missing) from exc
                    raise
                log.info("migration_applied", migration=path.name)
                applied.append(path.name)
            return applied
        finally:
            await conn.execute("select pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


def configure(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument(
        "--local-supabase",
        action="store_true",
        help="first create the Supabase roles, auth and storage pieces that plain PostgreSQL "
        "lacks (only those missing; implied by --embedded)",
    )
    parser.add_argument(
        "--migrations-dir",
        type=Path,
        default=None,
        help="directory of <YYYYMMDDHHMMSS>_<name>.sql files (default: EMGD_MIGRATIONS_DIR, "
        "else those shipped with emgd, i.e. the repository's supabase/migrations)",
    )


def main(args: argparse.Namespace) -> int:
    import asyncio

    from daemon.dbconnect import NoDatabaseError, database, fail, wants_embedded
    from daemon.embedded import EmbeddedPostgresError

    try:
        # the embedded server is plain PostgreSQL: it always gets the stand-in
        local_supabase = bool(args.local_supabase) or wants_embedded(args)
        with database(args, migrate=False) as dsn:
            applied = asyncio.run(
                apply_migrations(
                    dsn,
                    local_supabase=local_supabase,
                    migrations_dir=getattr(args, "migrations_dir", None),
                )
            )
    except (NoDatabaseError, SupabaseMissingError, EmbeddedPostgresError) as exc:
        return fail(str(exc))
    except (FileNotFoundError, ValueError) as exc:  # the migrations directory or its file names
        return fail(str(exc))
    except (OSError, ConnectionError) as exc:
        return fail(f"cannot reach the database: {exc}")
    log.info("migrate_done", applied=applied, count=len(applied))
    return 0
