"""``emgd migrate``: apply supabase/migrations (and, locally, the Supabase stand-in) once each.

Applied files are recorded in ``supabase_migrations.schema_migrations``, the table the Supabase
CLI itself keeps, so a project migrated with ``supabase db push`` and one migrated by emgd agree
on what has run. A transaction-independent advisory lock serialises daemons that start at the
same moment; each file runs in its own transaction together with its bookkeeping row.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Arbitrary but fixed: every emgd process must agree on it. ("emgd" in ASCII, then "mig".)
ADVISORY_LOCK_KEY = 0x656D6764_6D6967
MIGRATION_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[A-Za-z0-9_.-]+)\.sql$")
LOCAL_SUPABASE_SQL = Path(__file__).resolve().parent / "sql" / "local_supabase.sql"

_BOOKKEEPING = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
    version text not null primary key,
    statements text[],
    name text
);
"""


def default_migrations_dir() -> Path:
    override = os.environ.get("EMGD_MIGRATIONS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "supabase" / "migrations"


def migration_files(migrations_dir: Path) -> list[Path]:
    """Migration files in the order Supabase applies them (by their timestamp prefix)."""
    if not migrations_dir.is_dir():
        raise FileNotFoundError(f"migrations directory not found: {migrations_dir}")
    files = [p for p in migrations_dir.iterdir() if p.is_file() and p.suffix == ".sql"]
    bad = [p.name for p in files if not MIGRATION_NAME.match(p.name)]
    if bad:
        raise ValueError(f"migration files must be named <YYYYMMDDHHMMSS>_<name>.sql: {bad}")
    return sorted(files, key=lambda p: p.name)


async def apply_migrations(
    dsn: str, *, local_supabase: bool = False, migrations_dir: Path | None = None
) -> list[str]:
    """Apply the stand-in (if asked) and every migration not yet recorded; return those applied."""
    import asyncpg

    files = migration_files(migrations_dir or default_migrations_dir())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("select pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        try:
            if local_supabase:
                async with conn.transaction():
                    await conn.execute(LOCAL_SUPABASE_SQL.read_text())
                log.info("local_supabase_ready")
            async with conn.transaction():
                await conn.execute(_BOOKKEEPING)
            done = {
                r["version"]
                for r in await conn.fetch(
                    "select version from supabase_migrations.schema_migrations"
                )
            }
            applied: list[str] = []
            for path in files:
                match = MIGRATION_NAME.match(path.name)
                assert match is not None
                version = match["version"]
                if version in done:
                    continue
                sql = path.read_text()
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "insert into supabase_migrations.schema_migrations"
                        " (version, statements, name) values ($1, $2, $3)",
                        version,
                        [sql],
                        match["name"],
                    )
                log.info("migration_applied", migration=path.name)
                applied.append(path.name)
            return applied
        finally:
            await conn.execute("select pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    finally:
        await conn.close()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("EMGD_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="PostgreSQL URL (default: EMGD_DATABASE_URL, then DATABASE_URL); use a direct "
        "connection, not a transaction pooler",
    )
    parser.add_argument(
        "--local-supabase",
        action="store_true",
        help="first create the Supabase roles, auth and storage pieces that plain PostgreSQL "
        "lacks (only those missing)",
    )
    parser.add_argument(
        "--migrations-dir",
        type=Path,
        default=None,
        help="directory of <YYYYMMDDHHMMSS>_<name>.sql files (default: EMGD_MIGRATIONS_DIR or "
        "the repository's supabase/migrations)",
    )


def main(args: argparse.Namespace) -> int:
    import asyncio

    if not args.database_url:
        log.error("no_database_url", hint="pass --database-url or set EMGD_DATABASE_URL")
        return 2
    applied = asyncio.run(
        apply_migrations(
            args.database_url,
            local_supabase=args.local_supabase,
            migrations_dir=getattr(args, "migrations_dir", None),
        )
    )
    log.info("migrate_done", applied=applied, count=len(applied))
    return 0
