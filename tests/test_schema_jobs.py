"""The job state machine, the session status it drives, and requeue by SQL."""

from __future__ import annotations

import itertools
from datetime import timedelta

import asyncpg
import pytest

from tests.dbutil import connect, drain, make_session, make_user, notifications

STATES = ["pending", "running", "succeeded", "failed", "quarantined"]
LEGAL = {
    ("pending", "running"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "quarantined"),
    ("running", "pending"),
    ("succeeded", "pending"),
    ("failed", "pending"),
    ("quarantined", "pending"),
}
# A path from pending to each state through legal transitions only.
PATH = {
    "pending": [],
    "running": ["running"],
    "succeeded": ["running", "succeeded"],
    "failed": ["running", "failed"],
    "quarantined": ["running", "quarantined"],
}
SESSION_VIEW = {
    "pending": ("pending", "queued"),
    "running": ("processing", "downloading"),
    "succeeded": ("completed", "done"),
    "failed": ("failed", "failed"),
    "quarantined": ("failed", "failed"),
}


async def new_job(db) -> int:
    patient = await make_user(db, "patient")
    session = await make_session(db, patient, f"{patient.hex[:6]}.c3d")
    return await db.fetchval("select id from emgd.jobs where session_id = $1", session)


async def move(db, job: int, *states: str, error: str | None = None) -> None:
    for state in states:
        await db.execute(
            "update emgd.jobs set state = $2, last_error = coalesce($3, last_error) where id = $1",
            job,
            state,
            error,
        )


@pytest.mark.parametrize(("old", "new"), sorted(itertools.product(STATES, STATES)))
async def test_transition_table(db, old, new):
    job = await new_job(db)
    await move(db, job, *PATH[old])
    update = db.execute("update emgd.jobs set state = $2 where id = $1", job, new)
    if old == new or (old, new) in LEGAL:
        await update
        assert await db.fetchval("select state from emgd.jobs where id = $1", job) == new
    else:
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await update
        assert f"illegal job transition: {old} -> {new} (job {job})" in str(err.value)
        assert await db.fetchval("select state from emgd.jobs where id = $1", job) == old


@pytest.mark.parametrize("state", ["running", "succeeded", "bogus"])
async def test_a_job_is_born_pending(db, state):
    job = await new_job(db)
    session = await db.fetchval("select session_id from emgd.jobs where id = $1", job)
    await db.execute("delete from emgd.jobs where id = $1", job)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "insert into emgd.jobs (session_id, state) values ($1, $2)", session, state
        )


async def test_unknown_state_and_negative_counters_are_rejected(db):
    job = await new_job(db)
    with pytest.raises(asyncpg.CheckViolationError, match="state must be one of"):
        await db.execute("update emgd.jobs set state = 'done' where id = $1", job)
    with pytest.raises(asyncpg.CheckViolationError, match="must be >= 0"):
        await db.execute("update emgd.jobs set attempts = -1 where id = $1", job)


@pytest.mark.parametrize("state", STATES)
async def test_session_follows_the_job(db, state):
    job = await new_job(db)
    await move(db, job, *PATH[state], error="C3D truncated" if state != "pending" else None)
    row = await db.fetchrow(
        "select s.status, s.stage, s.error, s.progress, j.started_at, j.finished_at"
        " from emgd.jobs j join public.sessions s on s.id = j.session_id where j.id = $1",
        job,
    )
    assert (row["status"], row["stage"]) == SESSION_VIEW[state]
    if state == "failed":
        assert row["error"] == "C3D truncated"  # about the file: already a sentence for people
    elif state == "quarantined":
        assert "set aside" in row["error"]
    else:
        assert row["error"] is None
    assert row["progress"] == (1.0 if state == "succeeded" else 0.0)
    assert (row["started_at"] is not None) == (state != "pending")
    assert (row["finished_at"] is not None) == (state in ("succeeded", "failed", "quarantined"))


# What the daemon records (emgd.jobs.last_error) -> what the app shows (sessions.error).
TECHNICAL = {
    "storage unavailable: storage error 503 on c3d-examples/p/a.c3d: upstream (gave up after 5"
    " attempts)": "could not be downloaded",
    "database unavailable: DiskFullError (53100): could not extend file": "could not be saved",
    "results rejected by the database: contractions: end_ms (1) must be greater than start_ms"
    " (2)": "did not pass the checks",
    "internal error (KeyError) while processing this file; it was not analysed (the details are"
    " in the daemon's log)": "internal error",
    "object not found: c3d-examples/0f5e/secret-name.c3d": "no longer in storage",
    "'nobody/secret-name.c3d' is not under a known patient's folder (expected <patient user"
    " id>/<file>.c3d)": "not in a patient's folder",
    "analysis took longer than 60 s; worker killed (gave up after 5 attempts)": "did not finish",
}


@pytest.mark.parametrize("reason", sorted(TECHNICAL))
async def test_patients_read_a_sentence_and_the_technical_reason_stays_in_the_queue(db, reason):
    job = await new_job(db)
    await move(db, job, "running", "failed", error=reason)
    row = await db.fetchrow(
        "select s.error, j.last_error from emgd.jobs j join public.sessions s"
        " on s.id = j.session_id where j.id = $1",
        job,
    )
    assert row["last_error"] == reason
    assert TECHNICAL[reason] in row["error"]
    for technical in ("503", "c3d-examples", "secret-name", "Error", "end_ms", "60 s", "log"):
        assert technical not in row["error"], (technical, row["error"])


async def test_reasons_about_the_file_reach_people_as_they_are_but_bounded(db):
    job = await new_job(db)
    sentence = "the file is not a C3D recording (its header is not a C3D header)"
    await move(db, job, "running", "failed", error=sentence)
    assert (
        await db.fetchval(
            "select error from public.sessions where id = (select session_id"
            " from emgd.jobs where id = $1)",
            job,
        )
        == sentence
    )
    await move(db, job, "pending", "running", "failed", error="x" * 5000)
    error = await db.fetchval(
        "select error from public.sessions where id = (select session_id from emgd.jobs"
        " where id = $1)",
        job,
    )
    assert len(error) == 300


async def test_lease_exists_only_while_running(db):
    job = await new_job(db)
    await db.execute(
        "update emgd.jobs set state = 'running', lease_owner = gen_random_uuid(),"
        " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '30 seconds'"
        " where id = $1",
        job,
    )
    # same-state updates (heartbeats) keep it
    await db.execute(
        "update emgd.jobs set lease_expires_at = now() + interval '60 seconds' where id = $1", job
    )
    assert await db.fetchval("select lease_token is not null from emgd.jobs where id = $1", job)
    await move(db, job, "succeeded")
    row = await db.fetchrow("select * from emgd.jobs where id = $1", job)
    assert (row["lease_owner"], row["lease_token"], row["lease_expires_at"]) == (None, None, None)


async def test_becoming_pending_notifies_other_updates_do_not(db, db_url):
    job = await new_job(db)
    session = await db.fetchval("select session_id from emgd.jobs where id = $1", job)
    listener = await connect(db_url)
    try:
        heard = await notifications(listener)
        await move(db, job, "running")
        await db.execute("update emgd.jobs set attempts = attempts + 1 where id = $1", job)
        assert await drain(heard, db) == []
        await move(db, job, "pending")  # e.g. transient error, back off
        assert await drain(heard, db) == [{"job_id": job, "session_id": str(session)}]
        await db.execute("update emgd.jobs set run_after = now() where id = $1", job)
        assert await drain(heard, db) == []
    finally:
        await listener.close()


@pytest.fixture
async def jobs_by_state(db):
    """Two jobs in each state; failed/quarantined ones finished either 2 hours or just now ago."""
    jobs: dict[str, list[int]] = {}
    for state in STATES:
        jobs[state] = [await new_job(db), await new_job(db)]
        for job in jobs[state]:
            await move(db, job, *PATH[state], error="boom")
    old = [jobs["failed"][0], jobs["quarantined"][0], jobs["succeeded"][0]]
    await db.execute(
        "update emgd.jobs set finished_at = now() - interval '2 hours' where id = any($1)", old
    )
    return jobs


async def pending_ids(db) -> set[int]:
    return {r["id"] for r in await db.fetch("select id from emgd.jobs where state = 'pending'")}


async def run_and_listen(db, db_url, sql: str, *args):
    listener = await connect(db_url)
    try:
        heard = await notifications(listener)
        result = await db.fetchval(sql, *args)
        got = await drain(heard, db)
    finally:
        await listener.close()
    return result, {n["job_id"] for n in got}, len(got)


@pytest.mark.parametrize("state", STATES)
async def test_requeue_one_session(db, db_url, jobs_by_state, state):
    job = jobs_by_state[state][1]
    session = await db.fetchval("select session_id from emgd.jobs where id = $1", job)
    before = await pending_ids(db)
    count, notified, n = await run_and_listen(db, db_url, "select emgd.requeue($1)", session)
    if state in ("succeeded", "failed", "quarantined"):
        assert count == 1
        assert await pending_ids(db) == before | {job}
        assert (notified, n) == ({job}, 1)
        row = await db.fetchrow(
            "select j.attempts, j.last_error, s.status, s.error from emgd.jobs j"
            " join public.sessions s on s.id = j.session_id where j.id = $1",
            job,
        )
        assert tuple(row) == (0, None, "pending", None)
    else:  # already queued or being worked on: left alone
        assert count == 0
        assert await pending_ids(db) == before
        assert n == 0


async def test_requeue_of_unknown_session_is_zero(db):
    assert await db.fetchval("select emgd.requeue(gen_random_uuid())") == 0


async def test_requeue_failed_takes_failed_and_quarantined(db, db_url, jobs_by_state):
    before = await pending_ids(db)
    expected = set(jobs_by_state["failed"] + jobs_by_state["quarantined"])
    count, notified, n = await run_and_listen(db, db_url, "select emgd.requeue_failed()")
    assert count == 4
    assert await pending_ids(db) == before | expected
    assert (notified, n) == (expected, 4)


async def test_requeue_failed_since_takes_only_recent_ones(db, db_url, jobs_by_state):
    before = await pending_ids(db)
    expected = {jobs_by_state["failed"][1], jobs_by_state["quarantined"][1]}
    count, notified, n = await run_and_listen(
        db, db_url, "select emgd.requeue_failed($1)", timedelta(hours=1)
    )
    assert count == 2
    assert await pending_ids(db) == before | expected
    assert (notified, n) == (expected, 2)


async def test_reprocess_all_takes_every_finished_job(db, db_url, jobs_by_state):
    expected = set(
        jobs_by_state["succeeded"] + jobs_by_state["failed"] + jobs_by_state["quarantined"]
    )
    count, notified, n = await run_and_listen(db, db_url, "select emgd.reprocess_all()")
    assert count == 6
    assert await pending_ids(db) == set(jobs_by_state["pending"]) | expected
    assert (notified, n) == (expected, 6)
    running = await db.fetchval("select count(*) from emgd.jobs where state = 'running'")
    assert running == 2


async def test_plain_update_back_to_pending_notifies(db, db_url, jobs_by_state):
    job = jobs_by_state["succeeded"][0]
    _, notified, n = await run_and_listen(
        db, db_url, "update emgd.jobs set state = 'pending' where id = $1", job
    )
    assert (notified, n) == ({job}, 1)
