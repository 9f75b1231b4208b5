"""Embedded PostgreSQL: starts from nothing, answers asyncpg on its socket DSN, keeps its data."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from daemon.embedded import EmbeddedPostgres, EmbeddedPostgresError


def server_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_starts_creates_the_database_and_answers(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg")
    with pytest.raises(EmbeddedPostgresError):
        _ = pg.dsn
    dsn = await pg.astart()
    try:
        assert dsn.startswith("postgresql://") and "/emgd?host=" in dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT current_database()") == "emgd"
            await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (41)")
            # LISTEN/NOTIFY works: the daemon's wake-up path needs it
            got: asyncio.Queue[str] = asyncio.Queue()
            await conn.add_listener("c", lambda *a: got.put_nowait(a[3]))
            await conn.execute("NOTIFY c, 'hello'")
            assert await asyncio.wait_for(got.get(), 5) == "hello"
        finally:
            await conn.close()
    finally:
        await pg.astop()
    assert not server_running(tmp_path / "pg")

    # the data survives a restart on the same directory (sync API, as the CLI verbs use it)
    with EmbeddedPostgres(tmp_path / "pg") as again:
        conn = await asyncpg.connect(again.dsn)
        try:
            assert await conn.fetchval("SELECT x FROM t") == 41
        finally:
            await conn.close()


ATTACH = """
import asyncio, sys
import asyncpg
from daemon.embedded import EmbeddedPostgres
async def main():
    pg = EmbeddedPostgres(sys.argv[1], database="other")
    dsn = pg.start()  # blocking call from inside a running loop must work too
    conn = await asyncpg.connect(dsn)
    print(await conn.fetchval("SELECT current_database()"))
    await conn.close()
    pg.stop()
asyncio.run(main())
"""


async def test_a_second_process_attaches_without_stopping_the_first(tmp_path):
    async with EmbeddedPostgres(tmp_path / "pg") as pg:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ATTACH,
            str(tmp_path / "pg"),
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[1],
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0 and out.decode().strip().endswith("other")
        conn = await asyncpg.connect(pg.dsn)  # still up after the other process let go
        await conn.close()


def test_database_name_must_be_an_identifier(tmp_path):
    with pytest.raises(ValueError, match="plain identifier"):
        EmbeddedPostgres(tmp_path, database='x"; DROP DATABASE postgres; --')
