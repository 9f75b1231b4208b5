"""Jobs running at the same time share statements and commits, and still answer for themselves.

The daemon's queue (``JobQueue(pool, batch=True)``) sends the stage updates, reuse checks and
results of concurrent jobs as one statement each; a refused result, a lost lease or a reused
result is that job's outcome alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

import asyncpg
import pytest

from daemon.queue import (
    OPTIONS_REUSE_OR_STAGE_MANY,
    ClaimedJob,
    JobQueue,
    Reuse,
    Stage,
)
from emg_core import ANALYSIS_VERSION, analyze
from emg_core.synthetic import ghostly_recording
from tests import dbutil


class CountingPool:
    """The real pool; it only counts the statements sent through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.sent: list[str] = []
        self.elements: list[int | None] = []  # a batch's elements (its first array's length)

    async def fetch(self, sql: str, *args: object) -> list:
        self.sent.append(sql)
        self.elements.append(len(args[0]) if args and isinstance(args[0], list) else None)
        return await self.pool.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: object) -> object:
        self.sent.append(sql)
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: object) -> str:
        self.sent.append(sql)
        return await self.pool.execute(sql, *args)


@pytest.fixture(scope="module")
def result() -> tuple[bytes, dict]:
    data, _ = ghostly_recording(seed=5, duration_s=8.0)
    out = analyze(data, name="r.c3d").to_dict()
    out["processing"]["options"] = {}
    return data, out


@pytest.fixture
async def counted(db_url):
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    try:
        yield CountingPool(pool)
    finally:
        await pool.close()


async def claim_many(db, queue: JobQueue, n: int) -> list[ClaimedJob]:
    patient = await dbutil.make_user(db, "patient")
    for i in range(n):
        await dbutil.upload_object(db, dbutil.BUCKET, f"{patient}/{i}.c3d", user_id=patient)
    jobs = await queue.claim(owner=uuid.uuid4(), limit=n, lease_s=30)
    assert len(jobs) == n
    return jobs


async def states(db, jobs: list[ClaimedJob]) -> list[str]:
    rows = await db.fetch(
        "select id, state from emgd.jobs where id = any($1::bigint[])", [j.job_id for j in jobs]
    )
    by_id = {r["id"]: r["state"] for r in rows}
    return [by_id[j.job_id] for j in jobs]


async def commit_analysed(queue: JobQueue, job: ClaimedJob, data: bytes, result: dict) -> dict:
    """Commit ``result`` as ``job``'s, the way the daemon does: analysed with the options the
    reuse check answered (they key later reuse); returns those options."""
    sha = hashlib.sha256(data).hexdigest()
    verdict, options = await queue.reuse_or_stage(
        job,
        sha256=sha,
        size=len(data),
        analysis_version=ANALYSIS_VERSION,
        base_options={},
        next_stage=Stage.ANALYSING,
    )
    assert verdict is Reuse.STAGED
    result = {**result, "processing": {**result["processing"], "options": options}}
    assert await queue.complete(job, result_json=json.dumps(result), sha256=sha, size=len(data))
    return options


async def test_results_share_a_commit_and_each_job_keeps_its_own_outcome(db, counted, result):
    data, good = result
    queue = JobQueue(counted, batch=True)
    jobs = await claim_many(db, queue, 8)
    bad = json.loads(json.dumps(good))
    bad["channels"][0]["compliance_rate"] = 2.0  # the validation trigger refuses a rate > 1
    stale = jobs[2]
    await db.execute("update emgd.jobs set state = 'pending' where id = $1", stale.job_id)
    sha = hashlib.sha256(data).hexdigest()

    def complete(job: ClaimedJob):
        body = bad if job is jobs[5] else good
        return queue.complete(job, result_json=json.dumps(body), sha256=sha, size=len(data))

    sent_before = len(counted.sent)
    outcomes = await asyncio.gather(*(complete(j) for j in jobs), return_exceptions=True)

    assert isinstance(outcomes[5], asyncpg.CheckViolationError), outcomes[5]
    assert "compliance_rate" in str(outcomes[5])
    assert outcomes[2] is False  # the lease was lost: nothing written
    assert [o for i, o in enumerate(outcomes) if i not in (2, 5)] == [True] * 6
    assert await states(db, jobs) == [
        "succeeded",
        "succeeded",
        "pending",
        "succeeded",
        "succeeded",
        "running",  # refused results leave the job running, for the daemon to fail it
        "succeeded",
        "succeeded",
    ]
    stored = await db.fetchval(
        "select count(*) from public.session_parameters where session_id = $1",
        uuid.UUID(jobs[5].session_id),
    )
    assert stored == 0
    # calls made in the same turn of the event loop go as one statement
    assert len(counted.sent) - sent_before == 1
    assert counted.elements[-1] == 8


async def test_calls_made_while_a_statement_is_on_its_way_wait_and_go_together(db, counted):
    """One statement of a kind at a time: calls made while it is on its way wait for it, then go
    together as the next one (one commit for all of them), not as statements of their own."""
    queue = JobQueue(counted, batch=True)
    jobs = await claim_many(db, queue, 4)
    gate = asyncio.Event()
    fetch = counted.fetch

    async def held(sql: str, *args: object) -> list:
        if not gate.is_set():
            counted.sent.append(sql)  # seen leaving; held until the gate opens
            counted.elements.append(len(args[0]))  # type: ignore[arg-type]
            await gate.wait()
            return await counted.pool.fetch(sql, *args)
        return await fetch(sql, *args)

    counted.fetch = held  # type: ignore[method-assign]
    sent_before = len(counted.sent)
    first = asyncio.ensure_future(queue.set_stage(jobs[0], Stage.SAVING))
    while len(counted.sent) == sent_before:
        await asyncio.sleep(0)
    rest = [asyncio.ensure_future(queue.set_stage(j, Stage.SAVING)) for j in jobs[1:]]
    await asyncio.sleep(0.05)
    assert len(counted.sent) - sent_before == 1  # the others wait for the first
    gate.set()
    assert await asyncio.gather(first, *rest) == [True] * 4
    assert counted.elements[sent_before:] == [1, 3]


async def test_a_call_made_as_the_sender_ends_is_still_sent(db, counted):
    """A caller woken by its answer calls again at once, before the event loop has run the ended
    sender's clean-up callbacks: the call must start a sender of its own, not wait for one that
    has already ended (a job would then wait forever, its lease kept alive by heartbeats)."""
    queue = JobQueue(counted, batch=True)
    jobs = await claim_many(db, queue, 3)

    async def one_after_another() -> list[bool]:
        return [await queue.set_stage(job, Stage.SAVING) for job in jobs]

    assert await asyncio.wait_for(one_after_another(), timeout=10) == [True] * 3


async def test_reuse_checks_and_stages_batch_and_answer_per_job(db, counted, result):
    data, good = result
    queue = JobQueue(counted, batch=True)
    sha = hashlib.sha256(data).hexdigest()
    first = await claim_many(db, queue, 1)
    await commit_analysed(queue, first[0], data, good)

    jobs = await claim_many(db, queue, 6)
    lost = jobs[3]
    await db.execute("update emgd.jobs set state = 'pending' where id = $1", lost.job_id)

    def check(job: ClaimedJob):
        same = job is jobs[0] or job is jobs[4]  # the content already analysed
        return queue.reuse_or_stage(
            job,
            sha256=sha if same else hashlib.sha256(job.object_name.encode()).hexdigest(),
            size=len(data) if same else 10,
            analysis_version=ANALYSIS_VERSION,
            base_options={},
            next_stage=Stage.ANALYSING,
        )

    verdicts = [verdict for verdict, _ in await asyncio.gather(*(check(j) for j in jobs))]
    assert verdicts == [
        Reuse.REUSED,
        Reuse.STAGED,
        Reuse.STAGED,
        Reuse.LEASE_LOST,
        Reuse.REUSED,
        Reuse.STAGED,
    ]
    assert await states(db, jobs) == [
        "succeeded",
        "running",
        "running",
        "pending",
        "succeeded",
        "running",
    ]
    staged = [jobs[1], jobs[2], jobs[5]]
    oks = await asyncio.gather(*(queue.set_stage(j, Stage.SAVING) for j in [*staged, lost]))
    assert oks == [True, True, True, False]
    rows = await db.fetch(
        "select s.stage, s.progress from public.sessions s where s.id = any($1::uuid[])",
        [uuid.UUID(j.session_id) for j in staged],
    )
    assert {(r["stage"], round(r["progress"], 2)) for r in rows} == {("saving", 0.9)}


async def test_the_reuse_check_reads_the_patients_options_over_the_daemons(db, counted, result):
    """The options come back with the verdict: the daemon's own, overridden key by key by what
    the patient's therapist set; identical content is reused only when it was analysed with
    exactly those options (batched or alone)."""
    data, good = result
    sha = hashlib.sha256(data).hexdigest()
    patient = await dbutil.make_user(db, "patient")
    await db.execute(
        "insert into public.patient_emg_settings (patient_id, mvc_percentage) values ($1, 60)",
        patient,
    )
    for i in range(3):
        await dbutil.upload_object(db, dbutil.BUCKET, f"{patient}/{i}.c3d", user_id=patient)
    batched, alone = JobQueue(counted, batch=True), JobQueue(db)
    jobs = await batched.claim(owner=uuid.uuid4(), limit=3, lease_s=30)
    base = {"mvc_percentage": 75.0, "notch": "daemon"}

    def check(queue: JobQueue, job: ClaimedJob, base: dict):
        return queue.reuse_or_stage(
            job,
            sha256=sha,
            size=len(data),
            analysis_version=ANALYSIS_VERSION,
            base_options=base,
            next_stage=Stage.ANALYSING,
        )

    verdict, options = await check(batched, jobs[0], base)
    assert verdict is Reuse.STAGED
    assert options["mvc_percentage"] == 60.0  # the patient's, over the daemon's
    assert options["notch"] == "daemon"  # the daemon's, where the patient set nothing
    out = {**good, "processing": {**good["processing"], "options": options}}
    assert await batched.complete(jobs[0], result_json=json.dumps(out), sha256=sha, size=len(data))

    same, other = await asyncio.gather(
        check(batched, jobs[1], base), check(alone, jobs[2], {**base, "notch": "other"})
    )
    assert same == (Reuse.REUSED, options)
    assert other[0] is Reuse.STAGED and other[1] == {**options, "notch": "other"}


async def test_a_statement_that_fails_fails_every_job_in_it(db_url, db):
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    queue = JobQueue(pool, batch=True)
    jobs = await claim_many(db, queue, 3)
    await pool.close()  # every statement now fails the way a dropped connection does
    outcomes = await asyncio.gather(
        *(queue.set_stage(j, Stage.SAVING) for j in jobs), return_exceptions=True
    )
    assert all(isinstance(o, asyncpg.InterfaceError) for o in outcomes), outcomes


async def test_a_batch_that_reused_results_commits_durably(db, result):
    """Elements that only record a stage commit without waiting for the WAL flush; once one
    element completed its job by reuse, the whole batch's commit must wait for it."""
    data, good = result
    queue = JobQueue(db)
    sha = hashlib.sha256(data).hexdigest()
    (first,) = await claim_many(db, queue, 1)
    await commit_analysed(queue, first, data, good)
    jobs = await claim_many(db, queue, 2)

    async def batch(shas: list[str]) -> tuple[list[str], str]:
        async with db.transaction():
            rows = await db.fetch(
                OPTIONS_REUSE_OR_STAGE_MANY,
                [j.job_id for j in jobs],
                [j.lease_token for j in jobs],
                shas,
                [len(data), len(data)],
                json.dumps({}),
                ANALYSIS_VERSION,
                "analysing",
                0.4,
            )
            setting = await db.fetchval("show synchronous_commit")
            return [r["verdict"] for r in rows], setting

    staged_only = await batch(["0" * 64, "1" * 64])
    assert staged_only == (["staged", "staged"], "off")
    one_reused = await batch(["0" * 64, sha])
    assert one_reused == (["staged", "reused"], "on")


async def stored(db, job: ClaimedJob) -> tuple:
    """What a job's results left in the tables, without ids and times."""
    session = uuid.UUID(job.session_id)
    result = json.loads(await db.fetchval("select emgd.session_result($1)", session))
    result.pop("file")  # the object's name: each job has its own
    params = await db.fetch(
        "select name, contractions_total, contractions_good, mvc_value, processing"
        " from public.session_parameters where session_id = $1 order by id",
        session,
    )
    contractions = await db.fetch(
        "select channel, contraction_index, start_ms, end_ms, is_good from public.contractions"
        " where session_id = $1 order by id",
        session,
    )
    row = await db.fetchrow(
        "select status, stage, progress, error, content_sha256, file_size, duration_s"
        " from public.sessions where id = $1",
        session,
    )
    return result, [tuple(p) for p in params], [tuple(c) for c in contractions], tuple(row)


async def test_a_batch_writes_what_each_job_would_have_written_alone(db, counted):
    """The batch writes every job with one statement per table; each job must still get its own
    result's rows, in its own order, exactly as a job committed on its own does."""
    recordings = [ghostly_recording(seed=40 + i, duration_s=6.0 + 2 * i)[0] for i in range(4)]
    results = []
    for data in recordings:
        out = analyze(data, name="r.c3d").to_dict()
        out["processing"]["options"] = {}
        results.append(out)
    assert len({len(r["channels"][0]["contractions"]) for r in results}) > 1  # they differ

    async def commit(queue: JobQueue, together: bool) -> list[ClaimedJob]:
        jobs = await claim_many(db, queue, len(recordings))
        jobs.reverse()  # elements out of job id order
        calls = [
            queue.complete(
                job,
                result_json=json.dumps(out),
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
            )
            for job, out, data in zip(jobs, results, recordings, strict=True)
        ]
        oks = await asyncio.gather(*calls) if together else [await c for c in calls]
        assert oks == [True] * len(jobs)
        return jobs

    sent_before = len(counted.sent)
    batched = await commit(JobQueue(counted, batch=True), together=True)
    assert max(e or 0 for e in counted.elements[sent_before:]) > 1  # they did go together
    alone = await commit(JobQueue(db), together=False)
    for b, a in zip(batched, alone, strict=True):
        assert await stored(db, b) == await stored(db, a)


async def test_an_element_that_raises_in_a_reuse_batch_fails_alone(db):
    """A batch runs whole when nothing in it raises; when one element raises, that element alone
    answers with its error and the others are still checked and staged."""
    queue = JobQueue(db)
    jobs = await claim_many(db, queue, 3)
    # the middle session's stage write is refused (a stand-in for any error in one element)
    await db.execute(
        f"""
        create function pg_temp.refuse() returns trigger language plpgsql as $$
        begin
            if new.id = '{jobs[1].session_id}' and new.stage = 'analysing' then
                raise exception 'refused' using errcode = 'check_violation';
            end if;
            return new;
        end $$;
        create trigger refuse before update on public.sessions
            for each row execute function pg_temp.refuse();
        """
    )
    rows = await db.fetch(
        OPTIONS_REUSE_OR_STAGE_MANY,
        [j.job_id for j in jobs],
        [j.lease_token for j in jobs],
        [f"{i}" * 64 for i in range(3)],
        [10, 10, 10],
        json.dumps({}),
        ANALYSIS_VERSION,
        "analysing",
        0.4,
    )
    by_n = {r["n"]: r for r in rows}
    assert [by_n[i]["verdict"] for i in (1, 3)] == ["staged", "staged"]
    assert (by_n[2]["verdict"], by_n[2]["err_code"]) == (None, "23514")
    stages = await db.fetch(
        "select id, stage from public.sessions where id = any($1::uuid[])",
        [uuid.UUID(j.session_id) for j in jobs],
    )
    got = {str(r["id"]): r["stage"] for r in stages}
    assert [got[j.session_id] for j in jobs] == ["analysing", "downloading", "analysing"]
