"""The daemon's runtime: claim loop, concurrency slots, leases, drain, under structured concurrency.

Side tasks (listener, lease keeper, loop ticker, health server) run in one ``asyncio.TaskGroup``
with the claim loop: if any of them dies, the group cancels the rest, in-flight jobs are released,
and ``run`` returns 1 after logging ``daemon_task_failed`` — the daemon stops rather than hanging
half-alive. A stop request (SIGTERM/SIGINT) ends the claim loop, which waits up to
``shutdown_grace`` for jobs in flight, releases the rest, and ``run`` returns 0.

A database outage is not a reason to die, however long it lasts: every loop that queries treats
"the database is unreachable or restarting" (``dberrors.database_unavailable``) as something to
wait out. The daemon logs ``database_unavailable`` once, says so on ``/readyz``, retries about
once a second, and logs ``database_available`` when a query succeeds again; the listener is then
told to reconnect at once. Errors that waiting does not cure (a dropped database, a function a bad
migration removed) still stop the daemon with exit code 1, so a supervisor notices.

Storage credentials are checked before the first claim and again whenever Storage answers the
way it answers a rejected key (``StorageNotConfigured``). While the check fails the daemon claims
nothing, says so on ``/readyz`` (``not_ready.storage``) and once in the log
(``storage_not_configured``, naming SUPABASE_SERVICE_ROLE_KEY), and checks again every
``STORAGE_RECHECK_S``; the job that met the answer went back to pending uncounted. When the check
passes (``storage_configured``) claiming resumes: no job failed, none needs requeueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from typing import Any

import structlog

from daemon.dberrors import DATABASE_ERRORS, database_unavailable
from daemon.health import HealthServer, Ticker
from daemon.jobs import Analyser, JobRunner
from daemon.listener import Listener
from daemon.operator_page import Activity, page
from daemon.queue import ClaimedJob, JobQueue, OwnerLock
from daemon.settings import Settings
from daemon.storage import StorageBackend, StorageNotConfigured, StorageUnavailable

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.5
LIVENESS_STALE_SECONDS = 10.0
# While the database is away, the claim loop retries at most this far apart (or every poll
# interval, if shorter): work resumes within about a second of the database coming back.
OUTAGE_RETRY_MAX_S = 1.0
# A job whose commit landed while a heartbeat was on its way is missing from the heartbeat's
# answer: its lease is not lost, the job is simply done. Its task ends moments after the commit;
# only a job still running this long after the heartbeat really lost its lease.
LEASE_LOST_GRACE_S = 1.0
# How often the lease keeper runs the rescue: a dead daemon's jobs (its owner lock gone with its
# connection) go back to pending within about this long, whatever the lease length. Heartbeats
# keep their own, slower cadence.
RESCUE_INTERVAL_S = 1.0
# While Storage rejects the credentials, they are checked again this often.
STORAGE_RECHECK_S = 5.0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        dsn: str,
        storage: StorageBackend,
        analyser: Analyser,
        metrics: Any,
        analysis_version: str,
        options: dict[str, Any] | None = None,
        pool_stats: Any | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        """``queue``: the job queue to use (its pool stays the caller's); by default ``run``
        makes one over ``dsn`` and closes it at the end."""
        self._pool_stats = pool_stats
        self.settings = settings
        self.owner = uuid.uuid4()  # per process start, never the host name: restarts are new owners
        self._dsn = dsn
        self._storage = storage
        self._analyser = analyser
        self._metrics = metrics
        self._version = analysis_version
        self._options = options
        self._health: HealthServer | None = None
        self._queue = queue
        self._own_queue = queue is None
        # Held for as long as this process lives (see _hold_owner_lock).
        self._owner_lock = OwnerLock(dsn, self.owner)
        self._owner_guard = asyncio.Lock()  # the claim loop and the lease keeper both call it
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        # Keyed by lease token, not job id: an object overwritten mid-analysis re-queues the same
        # job, which this daemon may claim again while the superseded task still runs; each claim
        # must stay tracked (slots, heartbeats, drain) until its own task ends.
        self._in_flight: dict[str, tuple[asyncio.Task[str], ClaimedJob]] = {}
        self._notified: OrderedDict[int, float] = OrderedDict()
        self.ticker = Ticker(max_age=LIVENESS_STALE_SECONDS)  # /livez: the loop still turns
        self._last_db_ok: float | None = None  # monotonic time of the last good query; None: never
        self._db_down_since: float | None = None  # set while queries fail for database trouble
        self._db_error = ""
        self._catch_up_due = True  # the first pass of the claim loop catches up
        # Storage credentials: checked before the first claim and after every answer that looks
        # like a rejected key; while ``_storage_problem`` is set nothing is claimed.
        self._storage_problem: str | None = None
        self._storage_check_at: float | None = 0.0  # monotonic time of the next check; None: ok
        self._storage_reported = False  # storage_not_configured logged for the current spell
        self.draining = False
        self.listener: Listener | None = None

    # -- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming and drain (safe to call from a signal handler, any number of times)."""
        if not self._stop.is_set():
            log.info("daemon_stopping", in_flight=len(self._in_flight))
        self.draining = True
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def request_catch_up(self) -> None:
        """Run ``emgd.catch_up()`` before the next claim (the listener (re)connected or lost its
        connection). The claim loop runs it, with the claim's own handling of database trouble."""
        self._catch_up_due = True
        self._wake.set()

    # -- health -------------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons: dict[str, Any] = {}
        now = time.monotonic()
        if self._db_down_since is not None:
            down = now - self._db_down_since
            # states and counts only: error texts (which can quote data) go to the log
            reasons["database"] = f"unavailable for {down:.1f}s"
        elif self._last_db_ok is None:
            reasons["database"] = "no successful query yet"
        elif (age := now - self._last_db_ok) > max(3 * self.settings.poll_interval, 5.0):
            reasons["database"] = f"no successful query for {age:.1f}s"
        listener = self.listener
        mode = listener.mode if listener else "starting"
        if listener is None or not listener.healthy:
            reasons["listener"] = mode
        if self._pool_stats is not None:
            stats = self._pool_stats()
            if stats["starting"] >= stats["size"]:
                reasons["analysis_workers"] = f"no analysis worker is up: {stats}"
        if self._storage_problem is not None:
            # a fixed sentence: the details (bucket, Storage's words) are in the log event
            reasons["storage"] = (
                "configuration error: Supabase Storage rejects SUPABASE_SERVICE_ROLE_KEY or the"
                " bucket is missing (log event storage_not_configured)"
            )
        if self.draining:
            reasons["draining"] = "shutting down"
        details: dict[str, Any] = {"listener_mode": mode, "in_flight": len(self._in_flight)}
        if reasons:
            details["not_ready"] = reasons
        return not reasons, details

    async def activity(self) -> Activity:
        """This daemon's own state, for the operator page."""
        ready, details = await self.readiness()
        return Activity(
            owner=str(self.owner),
            ready=ready,
            not_ready={k: str(v) for k, v in details.get("not_ready", {}).items()},
            listener_mode=details["listener_mode"],
            concurrency=self.settings.concurrency,
            in_flight=len(self._in_flight),
            draining=self.draining,
            workers=None if self._pool_stats is None else self._pool_stats(),
        )

    @property
    def queue(self) -> JobQueue:
        """The job queue: the one given, or the one ``run`` makes before anything uses it."""
        assert self._queue is not None, "the queue is made at the start of run()"
        return self._queue

    async def operator_page(self) -> str:
        return await page(self.queue, await self.activity())

    # -- main ---------------------------------------------------------------------------------

    async def run(self) -> int:
        s = self.settings
        if self._queue is None:
            self._queue = await JobQueue.connect(self._dsn, max_size=s.concurrency + 3)
        queue = self._queue
        runner = JobRunner(
            queue,
            self._storage,
            self._analyser,
            metrics=self._metrics,
            analysis_version=self._version,
            options=self._options,
            max_file_bytes=int(s.max_file_mb * 1_000_000),
            on_storage_not_configured=self._storage_rejected,
            download_dir=s.download_dir,
        )
        self.listener = Listener(
            self._dsn,
            on_notify=self._on_notify,
            on_connect=self.request_catch_up,
            send_probe=self._send_probe,
            enabled=s.listen,
            on_reconnect=self._metrics.listener_reconnects_total.inc,
        )
        if s.health_port:  # 0 means no health server
            self._health = HealthServer(
                s.health_host,
                s.health_port,
                metrics=self._metrics,
                readiness=self.readiness,
                liveness=self.ticker.liveness,
                page=self.operator_page,
            )
        log.info(
            "daemon_started",
            owner=str(self.owner),
            concurrency=s.concurrency,
            listen=s.listen,
            poll_interval=s.poll_interval,
            analysis_version=self._version,
        )
        code = 0
        try:
            async with asyncio.TaskGroup() as tg:
                side = [
                    tg.create_task(self._guard("listener", self.listener.run())),
                    tg.create_task(self._guard("lease_keeper", self._lease_loop())),
                    tg.create_task(self._guard("ticker", self._tick_loop())),
                ]
                if self._health is not None:
                    side.append(tg.create_task(self._guard("health", self._serve_health())))
                await self._claim_loop(runner)
                for task in side:
                    task.cancel()
        except* Exception as group:
            code = 1
            for exc in group.exceptions:
                log.error("daemon_task_failed", error=repr(exc))
            await self._release_all()
        finally:
            # after a failure, pictures still queued are dropped (the results are committed)
            await runner.finish_reports(0)
            runner.remove_downloads()
            if self._own_queue:
                await queue.close()
            with contextlib.suppress(Exception):
                await self._owner_lock.close()
        log.info("daemon_stopped", exit_code=code)
        return code

    async def _guard(self, name: str, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("side_task_died", task=name, error=repr(exc))
            raise
        if not self._stop.is_set():
            raise RuntimeError(f"side task {name} ended unexpectedly")

    async def _serve_health(self) -> None:
        health = self._health
        assert health is not None, "run() serves health only when it made the server"
        port = await health.start()
        log.info("health_listening", port=port)
        try:
            await asyncio.Event().wait()
        finally:
            await health.stop()

    # -- claiming -----------------------------------------------------------------------------

    async def _claim_loop(self, runner: JobRunner) -> None:
        s = self.settings
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()
            free = s.concurrency - len(self._in_flight)
            claimed = 0
            try:
                if self._catch_up_due:
                    await self._catch_up()
                if free > 0 and not await self._storage_ready():
                    await self._sleep(min(s.poll_interval, STORAGE_RECHECK_S))
                    continue
                if free > 0:
                    await self._hold_owner_lock()  # never hold a job the others think orphaned
                rows = await self._claim(free) if free > 0 else []
                if free == 0 and self._db_down_since is not None:
                    await self.queue.ping()  # no claim to tell us it is back
                    self._db_ok()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise  # waiting will not cure it: stop the daemon (exit 1)
                failures += 1
                self._db_failed(exc)
                if failures == 1 or failures % 10 == 0:
                    log.warning("claim_failed", error=repr(exc), consecutive=failures)
                await self._sleep(min(s.poll_interval, OUTAGE_RETRY_MAX_S, 0.05 * 2**failures))
                continue
            failures = 0
            if free > 0:
                claimed = len(rows)
                now = time.perf_counter()
                for job in rows:
                    self._start(runner, job, now)
            if free > 0 and claimed == free:
                continue  # the queue may hold more: claim again before sleeping
            await self._sleep(await self._idle_wait(free, claimed))
        await self._drain()
        # pictures of results already committed, within the same grace
        await runner.finish_reports(self.settings.shutdown_grace)

    async def _storage_ready(self) -> bool:
        """False while Storage rejects our credentials; checks them when a check is due."""
        due = self._storage_check_at
        if due is None or time.monotonic() < due:
            return self._storage_problem is None
        try:
            await asyncio.wait_for(
                self._storage.check_credentials(await self.queue.c3d_bucket()),
                self.settings.storage_timeout,
            )
        except StorageNotConfigured as exc:
            self._storage_down(exc)
            return False
        except (StorageUnavailable, TimeoutError) as exc:
            # Storage cannot answer at all: that is the jobs' transient trouble, not a verdict
            # on the key. Claim, and ask again later.
            log.warning("storage_check_inconclusive", error=str(exc))
            self._storage_check_at = time.monotonic() + STORAGE_RECHECK_S
            return self._storage_problem is None
        if self._storage_reported:
            log.info("storage_configured")
        self._storage_problem, self._storage_check_at = None, None
        self._storage_reported = False
        return True

    async def _storage_rejected(self, exc: StorageNotConfigured, bucket: str) -> bool:
        """A job's download met an answer like a rejected key. Ask the credential check about
        that bucket: if it agrees, stop claiming until it passes (the check, not the job, is
        logged: its words name no object) and tell the job to wait; if it passes, the answer
        was a glitch the job retries like any storage trouble."""
        try:
            await asyncio.wait_for(
                self._storage.check_credentials(bucket), self.settings.storage_timeout
            )
        except StorageNotConfigured as confirmed:
            self._storage_down(confirmed)
            return True
        except (StorageUnavailable, TimeoutError):
            # cannot tell now: wait, and check again shortly (the job's words name its object)
            self._storage_down(
                StorageNotConfigured(
                    "Storage answered a download as it answers a rejected"
                    " SUPABASE_SERVICE_ROLE_KEY, and the check could not reach it"
                )
            )
            return True
        return False

    def _storage_down(self, exc: StorageNotConfigured) -> None:
        if not self._storage_reported:  # once per spell, not every STORAGE_RECHECK_S
            log.error(
                "storage_not_configured", variable="SUPABASE_SERVICE_ROLE_KEY", error=str(exc)
            )
            self._storage_reported = True
        self._storage_problem = str(exc)
        self._storage_check_at = time.monotonic() + STORAGE_RECHECK_S
        self._wake.set()

    async def _claim(self, free: int) -> list[ClaimedJob]:
        claim = asyncio.ensure_future(
            self.queue.claim(owner=self.owner, limit=free, lease_s=self.settings.lease_seconds)
        )
        try:
            rows: list[ClaimedJob] = await asyncio.shield(claim)
        except asyncio.CancelledError:
            await self._hand_back(claim)
            raise
        self._db_ok()
        return rows

    async def _hand_back(self, claim: asyncio.Future[list[ClaimedJob]]) -> None:
        """Release what a claim cancelled in flight took (a side task died mid-claim).

        The server may commit the claim after the client stopped waiting for it: its jobs are in
        no in-flight map, so nothing else would release them before their leases expired.
        """
        try:
            jobs = await claim
        except (Exception, asyncio.CancelledError):
            return  # the claim failed or was abandoned: it took nothing we know of
        for job in jobs:
            with contextlib.suppress(*DATABASE_ERRORS):  # the lease expires anyway
                await self.queue.release(job)

    async def _idle_wait(self, free: int, claimed: int) -> float:
        """How long to sleep: the poll interval, or less when a retry comes due before it."""
        poll = self.settings.poll_interval
        if self._db_down_since is not None:
            # a query elsewhere (lease keeper, a job) failed: find out soon whether it is back
            return min(poll, OUTAGE_RETRY_MAX_S)
        if free == 0 or claimed > 0:
            return poll  # woken by a finished job or a notification anyway
        try:
            due_in = await self.queue.next_due_in()
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self._db_failed(exc)
            return min(poll, OUTAGE_RETRY_MAX_S)
        if due_in is None:
            return poll
        return min(poll, max(due_in, 0.0) + 0.01)

    def _start(self, runner: JobRunner, job: ClaimedJob, claimed_at: float) -> None:
        self._metrics.jobs_claimed_total.inc()
        notified = self._notified.pop(job.job_id, None)
        if notified is not None:
            self._metrics.notify_to_claim_seconds.observe(max(claimed_at - notified, 0.0))
        task = asyncio.create_task(runner.run(job), name=f"job-{job.job_id}")
        self._in_flight[job.lease_token] = (task, job)
        self._metrics.jobs_in_progress.set(len(self._in_flight))
        token = job.lease_token

        def done(_task: asyncio.Task[str]) -> None:
            self._job_done(token)

        task.add_done_callback(done)

    def _job_done(self, lease_token: str) -> None:
        self._in_flight.pop(lease_token, None)
        self._metrics.jobs_in_progress.set(len(self._in_flight))
        self._wake.set()  # a slot is free

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _on_notify(self, message: dict[str, Any]) -> None:
        self._metrics.notifications_total.inc()
        job_id = message.get("job_id")
        if isinstance(job_id, int):
            self._notified[job_id] = message["received_at"]
            while len(self._notified) > 10_000:  # jobs another daemon took never get popped
                self._notified.popitem(last=False)
        self._wake.set()

    async def _catch_up(self) -> None:
        self._catch_up_due = False  # a request made while this one runs asks for another run
        try:
            created = await self.queue.catch_up()
        except BaseException:
            self._catch_up_due = True
            raise
        self._db_ok()
        if created:
            log.info("catch_up_found_objects", sessions_created=created)

    async def _send_probe(self, channel: str, payload: str) -> None:
        await self.queue.notify(channel, payload)

    def _db_ok(self) -> None:
        now = time.monotonic()
        self._last_db_ok = now
        if self._db_down_since is not None:
            log.info("database_available", unavailable_s=round(now - self._db_down_since, 2))
            self._db_down_since, self._db_error = None, ""
            if self.listener is not None:
                self.listener.retry_now()  # no need to sit out the rest of its backoff

    def _db_failed(self, exc: BaseException) -> bool:
        """Note a query that failed for database trouble; True if it starts an outage."""
        self._db_error = repr(exc)
        if self._db_down_since is not None:
            return False
        self._db_down_since = time.monotonic()
        log.warning("database_unavailable", error=self._db_error)
        self._wake.set()  # the claim loop retries from now on about once a second
        return True

    # -- leases -------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Hold the owner lock, extend our leases, rescue dead daemons' jobs (about once a
        second: a daemon that died is noticed by its lock, not by its lease), refresh metrics."""
        s = self.settings
        # load_settings fills it in (lease_seconds / 3) when the environment leaves it out
        assert s.heartbeat_interval is not None
        beat = s.heartbeat_interval
        next_beat = 0.0
        while True:
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + beat
                    await self._heartbeat()
                    for depth in await self.queue.queue_depth():
                        self._metrics.queue_depth.labels(state=depth.state).set(depth.jobs)
                await self._hold_owner_lock()  # again at once if its connection was lost
                rescued = await self.queue.rescue_expired()
                if rescued:
                    log.warning("expired_leases_rescued", jobs=rescued)
                    self._wake.set()
                self._db_ok()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise  # e.g. a function a bad migration dropped: stop the daemon (exit 1)
                if self._db_failed(exc):
                    log.warning("lease_keeper_db_error", error=repr(exc))
            await asyncio.sleep(min(beat, RESCUE_INTERVAL_S))

    async def _hold_owner_lock(self) -> None:
        """Keep holding the owner lock (``queue.OwnerLock``): a dead daemon's jobs are rescued
        at once, a paused one's wait for their lease."""
        if self._owner_lock.held:
            return
        async with self._owner_guard:
            await self._owner_lock.hold()

    async def _heartbeat(self) -> None:
        """Extend the leases of the jobs in flight; report those lost to another owner."""
        sent = dict(self._in_flight)
        if not sent:
            return
        held = await self.queue.heartbeat(
            owner=self.owner,
            job_ids={job.job_id for _, job in sent.values()},
            lease_s=self.settings.lease_seconds,
        )
        # A job missing from the answer may have committed while the heartbeat was on its way
        # (its lease ends with the commit): that is a finished job, not a lost lease. Only a job
        # whose task still runs a moment later has really lost its lease.
        missing = [task for task, job in sent.values() if job.job_id not in held]
        if not missing:
            return
        _, running = await asyncio.wait(missing, timeout=LEASE_LOST_GRACE_S)
        lost = {job.job_id for task, job in sent.values() if task in running}
        if lost:
            # Their commits will fail the lease check; nothing to do but say so.
            log.warning("leases_lost", job_ids=sorted(lost))

    async def _tick_loop(self) -> None:
        while True:
            self.ticker.tick()
            await asyncio.sleep(TICK_SECONDS)

    # -- shutdown -----------------------------------------------------------------------------

    async def _drain(self) -> None:
        entries = list(self._in_flight.values())
        if not entries:
            return
        log.info("draining", in_flight=len(entries), grace_s=self.settings.shutdown_grace)
        _, late = await asyncio.wait([t for t, _ in entries], timeout=self.settings.shutdown_grace)
        await self._cancel_and_release([(t, j) for t, j in entries if t in late])

    async def _release_all(self) -> None:
        await self._cancel_and_release(list(self._in_flight.values()))

    async def _cancel_and_release(
        self, entries: list[tuple[asyncio.Task[str], ClaimedJob]]
    ) -> None:
        """Cancel job tasks and hand their jobs back to pending.

        A running task releases its own job when cancelled; a task cancelled before it ever ran
        never enters its coroutine, so the release is repeated here (it is lease-checked, so a
        second release of the same claim is a no-op).
        """
        for task, _ in entries:
            task.cancel()
        if not entries:
            return
        await asyncio.wait([t for t, _ in entries], timeout=5)
        for _, job in entries:
            try:
                await self.queue.release(job)
            except DATABASE_ERRORS as exc:
                log.warning("release_failed", job_id=job.job_id, error=repr(exc))
