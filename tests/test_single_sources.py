"""Each queue fact has one home, and everything that uses it reads it there.

- the C3D bucket: ``emgd.config.bucket``, for the storage trigger and the storage policies alike;
- the attempt limit: ``emgd.config.max_attempts``, for a daemon's retry and the rescue alike;
- the job states: ``emgd.job_states()``, for the guard and the queue depth.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from daemon.queue import ClaimedJob, JobQueue
from daemon.settings import SettingsError, load_settings
from tests import dbutil

NEW_BUCKET = "emg-recordings"


async def test_the_storage_policies_and_the_trigger_follow_the_configured_bucket(db):
    patient = await dbutil.make_user(db, "patient")
    await db.execute(
        "insert into storage.buckets (id, name, public) values ($1, $1, false)", NEW_BUCKET
    )
    await db.execute("update emgd.config set bucket = $1", NEW_BUCKET)

    # The patient may upload to the configured bucket, and the upload becomes a session.
    await dbutil.upload_object(db, NEW_BUCKET, f"{patient}/a.c3d", user_id=patient, data=b"x")
    session = await db.fetchrow(
        "select bucket_id, status from public.sessions where object_name = $1", f"{patient}/a.c3d"
    )
    assert (session["bucket_id"], session["status"]) == (NEW_BUCKET, "pending")
    async with dbutil.as_user(db, patient) as conn:
        seen = await conn.fetchval(
            "select count(*) from storage.objects where bucket_id = $1", NEW_BUCKET
        )
    assert seen == 1

    # The old bucket is no longer ours: our policies grant nothing there any more.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await dbutil.upload_object(
            db, dbutil.BUCKET, f"{patient}/b.c3d", user_id=patient, data=b"x"
        )


async def _claimed(db, queue: JobQueue, attempts_before: int, lease_s: float) -> ClaimedJob:
    patient = await dbutil.make_user(db, "patient")
    name = f"{patient}/{uuid.uuid4().hex[:8]}.c3d"
    await dbutil.upload_object(db, dbutil.BUCKET, name, user_id=patient, data=b"x")
    await db.execute(
        "update emgd.jobs j set attempts = $2 from public.sessions s"
        " where s.id = j.session_id and s.object_name = $1",
        name,
        attempts_before,
    )
    (job,) = await queue.claim(owner=uuid.uuid4(), limit=1, lease_s=lease_s)
    assert job.object_name == name
    return job


async def _state(db, job: ClaimedJob) -> tuple[str, str | None]:
    row = await db.fetchrow("select state, last_error from emgd.jobs where id = $1", job.job_id)
    return row["state"], row["last_error"]


@pytest.mark.parametrize("limit", [2, 3])
async def test_a_retry_and_the_rescue_give_up_at_the_same_configured_limit(db, limit):
    await db.execute("update emgd.config set max_attempts = $1", limit)
    queue = JobQueue(db)

    retried = await _claimed(db, queue, attempts_before=1, lease_s=30)  # its 2nd attempt
    assert (retried.attempts, retried.max_attempts) == (2, limit)
    outcome = await queue.retry(retried, "storage unavailable", after_s=60)
    expired = await _claimed(db, queue, attempts_before=1, lease_s=0.05)
    await asyncio.sleep(0.1)
    assert await queue.rescue_expired() == 1

    if limit == 2:  # the 2nd attempt was the last
        assert outcome == "failed"
        assert await _state(db, retried) == (
            "failed",
            "storage unavailable (gave up after 2 attempts)",
        )
        assert (await _state(db, expired))[0] == "failed"
    else:
        assert outcome == "pending"
        assert await _state(db, retried) == ("pending", "storage unavailable")
        assert (await _state(db, expired))[0] == "pending"


async def test_a_retry_with_a_lost_lease_writes_nothing(db):
    queue = JobQueue(db)
    job = await _claimed(db, queue, attempts_before=0, lease_s=30)
    await db.execute("update emgd.jobs set state = 'pending' where id = $1", job.job_id)
    assert await queue.retry(job, "late", after_s=0) == "lease_lost"
    assert await _state(db, job) == ("pending", None)


async def test_the_queue_depth_lists_every_state_of_the_guard_in_order(db):
    states = await db.fetchval("select emgd.job_states()")
    depth = await JobQueue(db).queue_depth()
    assert [d.state for d in depth] == states
    assert states == ["pending", "running", "succeeded", "failed", "quarantined"]
    job = await _claimed(db, JobQueue(db), attempts_before=0, lease_s=30)
    with pytest.raises(asyncpg.CheckViolationError, match="state must be one of pending, running"):
        await db.execute("update emgd.jobs set state = 'done' where id = $1", job.job_id)


@pytest.mark.parametrize("name", ["EMGD_BUCKET", "EMGD_MAX_ATTEMPTS"])
def test_a_setting_that_moved_into_the_database_is_refused_not_ignored(monkeypatch, name):
    monkeypatch.setenv(name, "3")
    with pytest.raises(SettingsError, match=f"{name}: no longer a setting.*emgd.config"):
        load_settings(database_url="postgresql://x/y")
