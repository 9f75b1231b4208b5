"""Drive the real daemon in-process for the integration tests (tests/test_daemon_*.py).

- ``free_port()``: a TCP port free on 127.0.0.1 (health servers of daemons under test).
- ``recording(seed, duration_s)``: a synthetic GHOSTLY recording's bytes, its ground truth dropped.
- ``daemon_settings(dsn, storage_dir, **overrides)``: fast test settings (local storage, no health
  server, short poll) on top of the real defaults.
- ``running_daemon(settings, dsn)``: ``serve()`` as a task, ready (listener connected or polling,
  database answered, analysis workers up) when the block starts, asked to stop and awaited when it
  ends; the block's ``RunningDaemon`` has the ``Daemon`` and, afterwards, the exit code.
- ``wait_sessions(conn, ids, ...)``: until every session reaches a status (default: final).
- ``install_stage_log(conn)`` / ``stage_log(conn, id)``: a test-only trigger that records every
  status/stage a session goes through, in commit order.
- ``NotifyDroppingProxy``: a TCP proxy to PostgreSQL that accepts LISTEN but never delivers a
  notification, the way Supabase's transaction pooler behaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from daemon.runtime import serve
from daemon.settings import Settings, load_settings
from daemon.worker import Daemon
from emg_core.synthetic import ghostly_recording
from tests import dbutil

BUCKET = dbutil.BUCKET
FINAL = ("completed", "failed")
# Runs the real analysis; crashes or sleeps only on the markers (see tests/isolation_targets.py).
MISBEHAVE_TARGET = "tests.isolation_targets:real_or_misbehave"


def daemon_settings(dsn: str, storage_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "storage_backend": "local",
        "local_storage_dir": storage_dir,
        "health_port": 0,
        "health_host": "127.0.0.1",
        "concurrency": 1,
        "poll_interval": 0.2,
        "lease_seconds": 10.0,
        "shutdown_grace": 10.0,
        "job_timeout": 30.0,
        "job_memory_mb": 1024,
    }
    values.update(overrides)
    return load_settings(**values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recording(seed: int, duration_s: float = 10.0) -> bytes:
    return ghostly_recording(seed=seed, duration_s=duration_s)[0]


@dataclass
class RunningDaemon:
    daemon: Daemon
    task: asyncio.Task[int]
    settings: Settings
    exit_code: int | None = None

    def check_alive(self) -> None:
        if self.task.done():
            raise AssertionError(f"the daemon stopped early (exit code {self.task.result()})")

    async def stop(self, timeout: float = 30.0) -> int:
        self.daemon.request_stop()
        self.exit_code = await asyncio.wait_for(asyncio.shield(self.task), timeout)
        return self.exit_code


@contextlib.asynccontextmanager
async def running_daemon(
    settings: Settings,
    dsn: str,
    *,
    ready_timeout: float = 60.0,
    wait_ready: bool = True,
    **serve_kwargs: Any,
) -> AsyncIterator[RunningDaemon]:
    """The daemon running in this loop; ready when the block starts (unless ``wait_ready`` is
    false: a test of a daemon that cannot become ready), stopped (exit 0) after."""
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Daemon] = loop.create_future()
    task = asyncio.create_task(
        serve(settings, dsn, on_started=started.set_result, **serve_kwargs), name="emgd-serve"
    )
    await asyncio.wait({started, task}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        task.cancel()
        code = await asyncio.gather(task, return_exceptions=True)
        raise AssertionError(f"the daemon did not start: {code}")
    handle = RunningDaemon(started.result(), task, settings)
    try:
        deadline = time.monotonic() + ready_timeout
        while wait_ready:
            handle.check_alive()
            ready, details = await handle.daemon.readiness()
            if ready:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon never became ready: {details}")
            await asyncio.sleep(0.02)
    except BaseException:
        await _abandon(handle)
        raise
    try:
        yield handle
    except BaseException:
        await _abandon(handle)
        raise
    if not task.done():
        await handle.stop()
    handle.exit_code = task.result()
    assert handle.exit_code == 0, f"the daemon exited with {handle.exit_code}"


async def _abandon(handle: RunningDaemon) -> None:
    # The test already failed: stop the daemon without hiding that failure behind another.
    handle.daemon.request_stop()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(handle.task, 30)


# --- sessions ----------------------------------------------------------------------------------


async def make_patient(dsn: str) -> uuid.UUID:
    conn = await dbutil.connect(dsn)
    try:
        return await dbutil.make_user(conn, "patient")
    finally:
        await conn.close()


async def wait_sessions(
    conn: asyncpg.Connection,
    session_ids: Iterable[str | uuid.UUID],
    *,
    statuses: Iterable[str] = FINAL,
    timeout: float = 30.0,
    daemon: RunningDaemon | None = None,
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, dict[str, Any]]:
    """Session rows plus job state, attempts and crashes, by id, once all reach ``statuses``
    (and satisfy ``until``, when given)."""
    ids = [uuid.UUID(str(s)) for s in session_ids]
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    while True:
        rows = await conn.fetch(
            "select s.*, j.state as job_state, j.attempts, j.crashes, j.last_error, j.run_after"
            " from public.sessions s join emgd.jobs j on j.session_id = s.id"
            " where s.id = any($1::uuid[])",
            ids,
        )
        by_id = {str(r["id"]): dict(r) for r in rows}
        if len(by_id) == len(ids) and all(
            r["status"] in wanted and (until is None or until(r)) for r in by_id.values()
        ):
            return by_id
        if daemon is not None:
            daemon.check_alive()
        if time.monotonic() > deadline:
            seen = {k: (v["status"], v["stage"], v["error"]) for k, v in by_id.items()}
            raise AssertionError(f"sessions did not reach {sorted(wanted)} in {timeout}s: {seen}")
        await asyncio.sleep(0.02)


async def session_for(conn: asyncpg.Connection, object_name: str) -> uuid.UUID | None:
    return await conn.fetchval(
        "select id from public.sessions where bucket_id = $1 and object_name = $2",
        BUCKET,
        object_name,
    )


async def install_stage_log(conn: asyncpg.Connection) -> None:
    """Record every (status, stage) a session takes, as each change commits (superuser only)."""
    await conn.execute(
        """
        create schema test_log;
        create table test_log.stages (
            id bigint generated always as identity primary key,
            session_id uuid not null,
            status text not null,
            stage text not null
        );
        create function test_log.record_stage() returns trigger language plpgsql as $$
        begin
            insert into test_log.stages (session_id, status, stage)
            values (new.id, new.status, new.stage);
            return null;
        end $$;
        create trigger zz_test_stage_log_insert after insert on public.sessions
            for each row execute function test_log.record_stage();
        create trigger zz_test_stage_log_update after update on public.sessions
            for each row when (old.status is distinct from new.status
                               or old.stage is distinct from new.stage)
            execute function test_log.record_stage();
        """
    )


async def stage_log(conn: asyncpg.Connection, session_id: str | uuid.UUID) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "select status, stage from test_log.stages where session_id = $1 order by id",
        uuid.UUID(str(session_id)),
    )
    return [(r["status"], r["stage"]) for r in rows]


async def result_rows(conn: asyncpg.Connection, session_id: str | uuid.UUID) -> dict[str, Any]:
    """Everything a commit writes for a session, to compare before and after."""
    sid = uuid.UUID(str(session_id))
    session = await conn.fetchrow("select * from public.sessions where id = $1", sid)
    params = await conn.fetch(
        "select * from public.session_parameters where session_id = $1 order by name", sid
    )
    contractions = await conn.fetch(
        "select * from public.contractions where session_id = $1"
        " order by channel, contraction_index",
        sid,
    )
    job = await conn.fetchrow("select * from emgd.jobs where session_id = $1", sid)
    return {
        "session": dict(session),
        "parameters": [dict(r) for r in params],
        "contractions": [dict(r) for r in contractions],
        "job": dict(job),
    }


# --- metrics -----------------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def wait_metric(
    port: int,
    name: str,
    expected: float,
    *,
    timeout: float = 20.0,
    labels: dict[str, str] | None = None,
) -> str:
    """Scrape ``/metrics`` until ``name{labels}`` equals ``expected``; return the last scrape.

    A job's counters move after its commit, so a session can read ``completed`` a moment before
    ``jobs_finished_total`` counts it: wait for the number instead of reading it once.
    """
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            got = metric(text, name, **(labels or {}))
            if got == expected:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name}{labels or ''} is {got}, not {expected}, after {timeout}s"
                )
            await asyncio.sleep(0.05)


# --- a connection that cannot LISTEN -----------------------------------------------------------


@dataclass
class NotifyDroppingProxy:
    """Forwards the PostgreSQL protocol both ways but drops every NotificationResponse ('A').

    LISTEN is accepted and acknowledged; notifications never arrive, exactly what a client of a
    transaction pooler sees. Clients must not ask for SSL (``dsn`` adds ``sslmode=disable``) so
    every server-to-client byte is a typed message from the first one.
    """

    target_dsn: str
    dropped: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def dsn(self) -> str:
        parts = urlsplit(self.target_dsn)
        user = quote(parts.username or "postgres")
        password = f":{quote(parts.password)}" if parts.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{parts.path}?sslmode=disable"

    async def start(self) -> NotifyDroppingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.target_dsn)
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "localhost"])[0]
        port = int(query.get("port", [parts.port or 5432])[0])
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            sreader, swriter = await self._open_upstream()
            try:
                up = asyncio.create_task(_pipe(creader, swriter))
                down = asyncio.create_task(self._messages(sreader, cwriter))
                try:
                    await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    up.cancel()
                    down.cancel()
                    await asyncio.gather(up, down, return_exceptions=True)
            finally:
                swriter.close()
        except OSError:
            pass
        finally:
            cwriter.close()
            self._tasks.discard(task)

    async def _messages(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(5)
                body = await reader.readexactly(int.from_bytes(head[1:], "big") - 4)
                if head[:1] == b"A":
                    self.dropped += 1
                    continue
                writer.write(head + body)
                await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
