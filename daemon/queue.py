"""The daemon's whole conversation with the job queue's SQL functions, in one module.

The queue's logic lives in SQL (supabase/migrations: ``emgd.claim_jobs``, ``emgd.complete_job``
and the rest); this module names every call, passes arguments by name (``p_stage => ...``) so a
call reads like the function's signature, and turns rows into frozen dataclasses. Nothing else in
the daemon sends SQL to the job functions: ``worker.py`` is the loop, ``jobs.py`` one job, and
both speak through a ``JobQueue``.

``JobQueue`` takes anything with asyncpg's ``fetch``/``fetchval``/``execute`` (a pool, or one
connection for a CLI verb), so a test builds one over its own pool. ``JobQueue.connect`` makes the
pool the daemon uses. ``OwnerLock`` is the one query that needs a connection of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import operator
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import asyncpg

LISTEN_CHANNEL = "emgd_jobs"
PROBE_CHANNEL = "emgd_probe"

# -- the statements --------------------------------------------------------------------------------

CLAIM_JOBS = (
    "select * from emgd.claim_jobs("
    "p_owner => $1::uuid, p_limit => $2::int, p_lease_seconds => $3::float8)"
)
HEARTBEAT = (
    "select emgd.heartbeat("
    "p_owner => $1::uuid, p_job_ids => $2::bigint[], p_lease_seconds => $3::float8) as job_id"
)
SET_STAGE = (
    "select emgd.set_stage("
    "p_job_id => $1::bigint, p_token => $2::uuid, p_stage => $3::text, p_progress => $4::real)"
)
COMPLETE_JOB = (
    "select emgd.complete_job("
    "p_job_id => $1::bigint, p_token => $2::uuid, p_result => $3::jsonb,"
    " p_sha256 => $4::text, p_size => $5::bigint)"
)
RETRY_JOB = (
    "select emgd.retry_job("
    "p_job_id => $1::bigint, p_token => $2::uuid, p_reason => $3::text,"
    " p_retry_in => make_interval(secs => $4::float8), p_crashed => $5::boolean)"
)
FINISH_JOB = (
    "select emgd.finish_job("
    "p_job_id => $1::bigint, p_token => $2::uuid, p_state => $3::text, p_reason => $4::text,"
    " p_retry_in => make_interval(secs => $5::float8), p_crashed => $6::boolean)"
)
# The same calls for many jobs at once (see Batcher): one round trip and one commit per batch.
SET_STAGES = (
    "select n, ok, err_code, err_message from emgd.set_stages("
    "p_job_ids => $1::bigint[], p_tokens => $2::uuid[], p_stages => $3::text[],"
    " p_progress => $4::real[])"
)
# the patient's options merged over the daemon's, then the reuse check (or the next stage) with
# exactly those options: the verdict and the options per element (one job: a batch of one)
OPTIONS_REUSE_OR_STAGE_MANY = (
    "select n, verdict, options, err_code, err_message from emgd.options_reuse_or_stage_many("
    "p_job_ids => $1::bigint[], p_tokens => $2::uuid[], p_sha256 => $3::text[],"
    " p_sizes => $4::bigint[], p_base_options => $5::jsonb, p_analysis_version => $6::text,"
    " p_stage => $7::text, p_progress => $8::real)"
)
COMPLETE_JOBS = (
    "select n, ok, err_code, err_message from emgd.complete_jobs("
    "p_job_ids => $1::bigint[], p_tokens => $2::uuid[], p_results => $3::jsonb[],"
    " p_sha256 => $4::text[], p_sizes => $5::bigint[])"
)
RELEASE_JOB = "select emgd.release_job(p_job_id => $1::bigint, p_token => $2::uuid)"
# the report picture: when the session's results were committed, and (for results copied
# from identical content) those results; then the picture's path, for exactly those results
REPORT_SOURCE = (
    "select s.processed_at,"
    " case when $2::boolean then emgd.session_result(p_session_id => s.id) end as result"
    " from public.sessions s where s.id = $1::uuid"
)
SET_REPORT_PATH = (
    "select emgd.set_report_path("
    "p_session_id => $1::uuid, p_report_path => $2::text, p_processed_at => $3::timestamptz)"
)
RESCUE_EXPIRED = "select emgd.rescue_expired()"
CATCH_UP = "select emgd.catch_up()"
# on the daemon's own connection: a lock the database frees when the process dies
HOLD_OWNER_LOCK = "select emgd.hold_owner_lock(p_owner => $1::uuid)"
# seconds until the earliest pending job is due (a retry's backoff), or null with none pending
NEXT_DUE_IN = (
    "select extract(epoch from min(run_after) - clock_timestamp())::float8"
    " from emgd.jobs where state = 'pending'"
)
QUEUE_DEPTH = "select state, jobs, oldest from emgd.queue_depth()"
RECENT_FAILURES = """
    select s.id as session_id, s.bucket_id, s.object_name, j.state, j.attempts, j.crashes,
           j.last_error, j.finished_at
    from emgd.jobs j join public.sessions s on s.id = j.session_id
    where j.state in ('failed', 'quarantined')
    order by j.finished_at desc nulls last
    limit $1::int
"""
# jobs that ended (succeeded, failed, quarantined) per minute and state, over the last $1 minutes
# (the current one included); a retry goes back to pending and is not an end
THROUGHPUT = """
    select date_trunc('minute', finished_at) as minute, state, count(*)::int as jobs
    from emgd.jobs
    where state in ('succeeded', 'failed', 'quarantined')
      and finished_at >= date_trunc('minute', now()) - make_interval(mins => $1::int - 1)
    group by 1, 2
    order by 1, 2
"""
# what every daemon is working on now, longest-running first (partial index on running jobs)
RUNNING_JOBS = """
    select j.session_id, s.stage, j.started_at, j.attempts, j.lease_owner
    from emgd.jobs j join public.sessions s on s.id = j.session_id
    where j.state = 'running'
    order by j.started_at
    limit $1::int
"""
REQUEUE = "select emgd.requeue(session_id => $1::uuid)"
REQUEUE_FAILED = "select emgd.requeue_failed(since => $1::text::interval)"
REPROCESS_ALL = "select emgd.reprocess_all()"
# the bucket whose .c3d objects are sessions: the database's, read by its trigger and policies too
C3D_BUCKET = "select bucket from emgd.config"
PING = "select 1"
NOTIFY = "select pg_notify($1::text, $2::text)"


# -- the rows --------------------------------------------------------------------------------------


class Stage(enum.StrEnum):
    """What the app shows while a job runs, each with the progress it reports."""

    DOWNLOADING = "downloading"  # set by the claim itself
    ANALYSING = "analysing"
    # The daemon no longer writes it (the results' commit is the save); the app's vocabulary
    # and emgd.set_stage keep it.
    SAVING = "saving"

    @property
    def progress(self) -> float:
        return _PROGRESS[self]


_PROGRESS = {Stage.DOWNLOADING: 0.0, Stage.ANALYSING: 0.4, Stage.SAVING: 0.9}


class Reuse(enum.StrEnum):
    """``emgd.reuse_or_stage``'s answer."""

    REUSED = "reused"  # identical content's results were copied: the job is complete
    STAGED = "staged"  # nothing to reuse: the next stage is recorded, analyse now
    LEASE_LOST = "lease_lost"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One row of ``emgd.claim_jobs``: a job this daemon now holds a lease on."""

    job_id: int
    session_id: str
    lease_token: str
    attempts: int
    max_attempts: int
    crashes: int
    bucket_id: str
    object_name: str
    object_version: str | None
    patient_id: str | None
    object_size: int | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ClaimedJob:
        return cls(
            job_id=row["job_id"],
            session_id=str(row["session_id"]),
            lease_token=str(row["lease_token"]),
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            crashes=row["crashes"],
            bucket_id=row["bucket_id"],
            object_name=row["object_name"],
            object_version=row["object_version"],
            patient_id=None if row["patient_id"] is None else str(row["patient_id"]),
            object_size=row["object_size"],
        )


@dataclass(frozen=True, slots=True)
class StateCount:
    """One row of ``emgd.queue_depth()``: jobs in a state and the oldest one's creation."""

    state: str
    jobs: int
    oldest: dt.datetime | None


@dataclass(frozen=True, slots=True)
class FailedJob:
    session_id: str
    bucket_id: str
    object_name: str
    state: str
    attempts: int
    crashes: int
    last_error: str | None
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class MinuteCount:
    """Jobs that ended in ``state`` during the minute starting at ``minute``."""

    minute: dt.datetime
    state: str
    jobs: int


@dataclass(frozen=True, slots=True)
class RunningJob:
    session_id: str
    stage: str
    started_at: dt.datetime | None
    attempts: int
    owner: str | None


class Executor(Protocol):
    """What a ``JobQueue`` needs: an asyncpg pool or connection."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def execute(self, query: str, *args: Any) -> str: ...


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo. Every statement the daemon sends is one self-contained call
    whose settings (SET LOCAL) end with its transaction, and asyncpg still rolls back an open
    transaction on release; the default reset (RESET ALL, UNLISTEN *, CLOSE ALL, advisory
    unlock) would add a round trip to every query, doubling the queue's per-job traffic."""


# -- batches ---------------------------------------------------------------------------------------

# Elements per batch: enough to share one commit among every job a busy daemon has in flight,
# few enough that one statement stays short.
MAX_BATCH = 64


class Batcher:
    """Many jobs' calls of one kind as one statement (a ``*_many`` SQL function).

    A call goes at the event loop's next turn, with every call made before it (a lone job waits
    no longer than a direct call). While that statement is on its way, calls made meanwhile wait
    for it to return and then go together in the next (group commit: a busy daemon sends one
    statement and one commit for many jobs). One statement of a kind at a time: the statements
    write a batch with one statement per table, so one batch of 2n costs the server less than two
    of n sent side by side, and the other kinds keep the second core busy. Each caller gets its
    own element's answer, or its own element's error (an ``asyncpg.PostgresError`` with the
    element's SQLSTATE, classified like any other); an error of the whole statement (the
    connection dropped) goes to every caller in the batch.
    """

    def __init__(
        self,
        db: Executor,
        sql: str,
        arguments: Callable[[Sequence[tuple[Any, ...]]], Sequence[Any]],
        *,
        max_batch: int = MAX_BATCH,
        answer: Callable[[Any], Any] = operator.itemgetter("ok"),
    ) -> None:
        """``answer``: a caller's answer from its element's row (by default the ``ok`` column)."""
        self._db = db
        self._sql = sql
        self._arguments = arguments
        self._answer = answer
        self._max = max_batch
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, *element: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((element, fut))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return await fut

    async def _send(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            batch = [(e, f) for e, f in batch if not f.done()]  # callers cancelled meanwhile
            if not batch:
                continue
            try:
                rows = await self._db.fetch(self._sql, *self._arguments([e for e, _ in batch]))
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except BaseException as exc:  # the statement failed: every element did
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for row in rows:
                fut = batch[row["n"] - 1][1]
                if fut.done():
                    continue
                if row["err_code"] is not None:
                    fut.set_exception(_element_error(row))
                else:
                    fut.set_result(self._answer(row))


def _element_error(row: Any) -> asyncpg.PostgresError:
    """An element's own error, as the exception its statement would have raised alone."""
    return asyncpg.PostgresError.new({"C": row["err_code"], "M": row["err_message"], "S": "ERROR"})


def _columns(elements: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*elements, strict=True)]


# -- the queue -------------------------------------------------------------------------------------


class JobQueue:
    """Typed calls to the job functions over ``db`` (a pool or a connection).

    With ``batch`` (the daemon's pool), the options reads, stage updates, reuse checks and
    results of jobs running at the same time share statements and commits (``Batcher``); each
    call still answers for its own job only. Without it (one connection, a CLI verb, a test)
    every call is its own.
    """

    def __init__(self, db: Executor, *, batch: bool = False) -> None:
        self.db = db
        self._batch = batch
        self._stages = Batcher(db, SET_STAGES, _columns)
        self._completes = Batcher(db, COMPLETE_JOBS, _columns)
        # one per version, next stage and daemon options: what a batch's elements share
        self._reuse: dict[tuple[str, Stage, str], Batcher] = {}

    @classmethod
    async def connect(cls, dsn: str, *, max_size: int) -> JobQueue:
        """The daemon's pool. No connection is made yet: a daemon started while the database is
        down waits for it in the claim loop like any other outage, instead of failing to start."""
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=max_size, command_timeout=60, reset=_keep_session
        )
        return cls(pool, batch=True)

    async def close(self) -> None:
        await self.db.close()  # type: ignore[attr-defined]

    # claiming and leases

    async def claim(self, *, owner: uuid.UUID, limit: int, lease_s: float) -> list[ClaimedJob]:
        rows = await self.db.fetch(CLAIM_JOBS, owner, limit, lease_s)
        return [ClaimedJob.from_row(r) for r in rows]

    async def heartbeat(
        self, *, owner: uuid.UUID, job_ids: Iterable[int], lease_s: float
    ) -> set[int]:
        """Extend our leases; returns the job ids whose lease we still hold."""
        rows = await self.db.fetch(HEARTBEAT, owner, list(job_ids), lease_s)
        return {r["job_id"] for r in rows}

    async def rescue_expired(self) -> int:
        """Hand expired leases and dead owners' jobs back; returns how many."""
        return int(await self.db.fetchval(RESCUE_EXPIRED) or 0)

    async def catch_up(self) -> int:
        """Jobs for objects the trigger missed; returns how many sessions it created or reset."""
        return int(await self.db.fetchval(CATCH_UP) or 0)

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending job is due, None with nothing pending."""
        due = await self.db.fetchval(NEXT_DUE_IN)
        return None if due is None else float(due)

    # one job (every call below is lease-checked in SQL: False means the lease is not ours)

    async def set_stage(self, job: ClaimedJob, stage: Stage) -> bool:
        if self._batch:
            ok = await self._stages.call(job.job_id, job.lease_token, str(stage), stage.progress)
        else:
            ok = await self.db.fetchval(
                SET_STAGE, job.job_id, job.lease_token, stage, stage.progress
            )
        return bool(ok)

    async def report_source(
        self, job: ClaimedJob, *, with_result: bool
    ) -> tuple[dt.datetime | None, dict[str, Any] | None]:
        """The committed results' time and, ``with_result``, the results as stored."""
        rows = await self.db.fetch(REPORT_SOURCE, job.session_id, with_result)
        if not rows:
            return None, None
        raw = rows[0]["result"]
        result = json.loads(raw) if isinstance(raw, str) else raw
        return rows[0]["processed_at"], result

    async def set_report_path(
        self, job: ClaimedJob, *, path: str, processed_at: dt.datetime
    ) -> bool:
        """Record the picture of the results committed at ``processed_at``; False when newer
        results (or none) are there."""
        return bool(await self.db.fetchval(SET_REPORT_PATH, job.session_id, path, processed_at))

    async def reuse_or_stage(
        self,
        job: ClaimedJob,
        *,
        sha256: str,
        size: int,
        analysis_version: str,
        base_options: dict[str, Any],
        next_stage: Stage,
    ) -> tuple[Reuse, dict[str, Any]]:
        """Read the patient's targets and MVC (settings, reference session) merged over
        ``base_options``, then copy the results of identical content analysed with the same
        version and exactly those options, or else record ``next_stage``: one round trip. Returns
        the verdict and the options (the analysis must run with the options the check used)."""
        base = json.dumps(base_options, sort_keys=True)
        element = (job.job_id, job.lease_token, sha256, size)
        if self._batch:
            key = (analysis_version, next_stage, base)
            batcher = self._reuse.get(key)
            if batcher is None:

                def arguments(elements: Sequence[tuple[Any, ...]]) -> list[Any]:
                    return [*_columns(elements), key[2], key[0], str(key[1]), key[1].progress]

                batcher = self._reuse[key] = Batcher(
                    self.db,
                    OPTIONS_REUSE_OR_STAGE_MANY,
                    arguments,
                    answer=operator.itemgetter("verdict", "options"),
                )
            verdict, options = await batcher.call(*element)
        else:
            (row,) = await self.db.fetch(
                OPTIONS_REUSE_OR_STAGE_MANY,
                *([value] for value in element),
                base,
                analysis_version,
                str(next_stage),
                next_stage.progress,
            )
            if row["err_code"] is not None:
                raise _element_error(row)
            verdict, options = row["verdict"], row["options"]
        return Reuse(verdict), json.loads(options) if isinstance(options, str) else dict(options)

    async def complete(self, job: ClaimedJob, *, result_json: str, sha256: str, size: int) -> bool:
        """Store the results and end the job succeeded, in one transaction (batched: with other
        jobs' results, each in a subtransaction of its own, under one durable commit)."""
        if self._batch:
            ok = await self._completes.call(job.job_id, job.lease_token, result_json, sha256, size)
        else:
            ok = await self.db.fetchval(
                COMPLETE_JOB, job.job_id, job.lease_token, result_json, sha256, size
            )
        return bool(ok)

    async def fail(self, job: ClaimedJob, reason: str, *, crashed: bool = False) -> bool:
        """Failed for good (a permanent error: the file is at fault)."""
        return await self._finish(job, "failed", reason, 0.0, crashed)

    async def quarantine(self, job: ClaimedJob, reason: str) -> bool:
        """The analysis crashed or timed out once too often: the file is kept from running."""
        return await self._finish(job, "quarantined", reason, 0.0, True)

    async def retry(
        self, job: ClaimedJob, reason: str, *, after_s: float, crashed: bool = False
    ) -> Literal["pending", "failed", "lease_lost"]:
        """A transient failure: back to pending, due again in ``after_s`` seconds, or failed
        ("gave up after N attempts") once the job has used ``emgd.config.max_attempts``."""
        state = await self.db.fetchval(
            RETRY_JOB, job.job_id, job.lease_token, reason, after_s, crashed
        )
        if state not in ("pending", "failed", "lease_lost"):
            raise ValueError(f"emgd.retry_job answered {state!r}")
        return cast(Literal["pending", "failed", "lease_lost"], state)

    async def _finish(
        self, job: ClaimedJob, state: str, reason: str, retry_in: float, crashed: bool
    ) -> bool:
        ok = await self.db.fetchval(
            FINISH_JOB, job.job_id, job.lease_token, state, reason, retry_in, crashed
        )
        return bool(ok)

    async def release(self, job: ClaimedJob) -> bool:
        """Hand the job back untouched (shutting down): the attempt does not count."""
        return bool(await self.db.fetchval(RELEASE_JOB, job.job_id, job.lease_token))

    # the operator's view and verbs

    async def queue_depth(self) -> list[StateCount]:
        rows = await self.db.fetch(QUEUE_DEPTH)
        return [StateCount(r["state"], r["jobs"], r["oldest"]) for r in rows]

    async def recent_failures(self, limit: int) -> list[FailedJob]:
        rows = await self.db.fetch(RECENT_FAILURES, limit)
        return [
            FailedJob(
                session_id=str(r["session_id"]),
                bucket_id=r["bucket_id"],
                object_name=r["object_name"],
                state=r["state"],
                attempts=r["attempts"],
                crashes=r["crashes"],
                last_error=r["last_error"],
                finished_at=r["finished_at"],
            )
            for r in rows
        ]

    async def throughput(self, minutes: int) -> list[MinuteCount]:
        rows = await self.db.fetch(THROUGHPUT, minutes)
        return [MinuteCount(r["minute"], r["state"], r["jobs"]) for r in rows]

    async def running_jobs(self, limit: int) -> list[RunningJob]:
        rows = await self.db.fetch(RUNNING_JOBS, limit)
        return [
            RunningJob(
                session_id=str(r["session_id"]),
                stage=r["stage"],
                started_at=r["started_at"],
                attempts=r["attempts"],
                owner=None if r["lease_owner"] is None else str(r["lease_owner"]),
            )
            for r in rows
        ]

    async def requeue(self, session_id: uuid.UUID) -> int:
        return int(await self.db.fetchval(REQUEUE, session_id) or 0)

    async def requeue_failed(self, since: str | None = None) -> int:
        """Failed and quarantined jobs, those finished within ``since`` (an interval) if given."""
        return int(await self.db.fetchval(REQUEUE_FAILED, since) or 0)

    async def reprocess_all(self) -> int:
        return int(await self.db.fetchval(REPROCESS_ALL) or 0)

    # plumbing

    async def c3d_bucket(self) -> str:
        """``emgd.config.bucket``: the one place the bucket's name is kept."""
        return str(await self.db.fetchval(C3D_BUCKET))

    async def ping(self) -> None:
        await self.db.fetchval(PING)

    async def notify(self, channel: str, payload: str) -> None:
        await self.db.execute(NOTIFY, channel, payload)


class OwnerLock:
    """The advisory lock keyed by this daemon's owner id, on a connection of its own.

    The database frees the lock when this process dies (its connection ends), and any live
    daemon's rescue then hands our running jobs back at once instead of after their lease. A
    paused process keeps its connection, so its jobs still wait for the lease. A new connection
    takes the lock again; if an old session of ours still holds it, that session vouches for us
    until the server notices it is gone, and the next ``hold`` retries.
    """

    def __init__(self, dsn: str, owner: uuid.UUID) -> None:
        self._dsn = dsn
        self._owner = owner
        self._conn: asyncpg.Connection | None = None
        self._locked = False

    @property
    def held(self) -> bool:
        return self._locked and self._conn is not None and not self._conn.is_closed()

    async def hold(self) -> bool:
        """Connect and take the lock if not already held; True once it is."""
        if self._conn is None or self._conn.is_closed():
            self._locked = False
            self._conn = await asyncpg.connect(self._dsn, timeout=10)
        if not self._locked:
            self._locked = bool(await self._conn.fetchval(HOLD_OWNER_LOCK, self._owner))
        return self._locked

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close(timeout=5)
