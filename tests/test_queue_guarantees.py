"""The queue's guarantees that no other test pinned down: each test here fails when the rule it
names is removed (a heartbeat that extends anyone's lease, a daemon that never heartbeats, a
backoff that stops growing, a rescue that loops an exhausted job, a catch-up blind to versions).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from daemon.local import upload
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import (
    MISBEHAVE_TARGET,
    daemon_settings,
    make_patient,
    running_daemon,
    wait_sessions,
)
from tests.isolation_targets import SLOW_MARKER
from tests.storage_server import start_storage_server


async def _pending_job(conn, *, max_attempts: int = 5) -> uuid.UUID:
    patient = await dbutil.make_user(conn, "patient")
    sid = await dbutil.make_session(conn, patient)
    await conn.execute("update emgd.config set max_attempts = $1", max_attempts)
    return sid


async def _claim(conn, owner: uuid.UUID, lease: float = 30.0):
    job = await conn.fetchrow("select * from emgd.claim_jobs($1, 1, $2)", owner, lease)
    assert job is not None
    return job


async def test_a_heartbeat_extends_only_the_owners_own_leases(db):
    await _pending_job(db)
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    job = await _claim(db, owner, lease=5)
    before = await db.fetchval(
        "select lease_expires_at from emgd.jobs where id = $1", job["job_id"]
    )
    # another daemon naming this job (a bug, or a stale id list) extends nothing, and is told so
    got = await db.fetch("select * from emgd.heartbeat($1, $2, 3600)", stranger, [job["job_id"]])
    assert got == []
    after = await db.fetchval("select lease_expires_at from emgd.jobs where id = $1", job["job_id"])
    assert after == before
    # the owner's heartbeat does extend it
    got = await db.fetch("select * from emgd.heartbeat($1, $2, 3600)", owner, [job["job_id"]])
    assert [r[0] for r in got] == [job["job_id"]]
    assert await db.fetchval(
        "select lease_expires_at > now() + interval '3000 seconds' from emgd.jobs where id = $1",
        job["job_id"],
    )


async def test_an_expired_lease_with_no_attempts_left_fails_instead_of_looping(db):
    sid = await _pending_job(db, max_attempts=2)
    for attempt in (1, 2):
        job = await _claim(db, uuid.uuid4())
        assert job["attempts"] == attempt
        await db.execute(
            "update emgd.jobs set lease_expires_at = now() - interval '1 second' where id = $1",
            job["job_id"],
        )
        assert await db.fetchval("select emgd.rescue_expired()") == 1
        row = await db.fetchrow(
            "select j.state, j.finished_at, s.status from emgd.jobs j"
            " join public.sessions s on s.id = j.session_id where s.id = $1",
            sid,
        )
        if attempt == 1:
            assert (row["state"], row["status"]) == ("pending", "pending")
    assert (row["state"], row["status"]) == ("failed", "failed")
    assert row["finished_at"] is not None
    assert await db.fetchval("select count(*) from emgd.claim_jobs($1, 1, 30)", uuid.uuid4()) == 0


async def test_catch_up_resets_a_job_whose_new_object_version_the_trigger_missed(db):
    patient = await dbutil.make_user(db, "patient")
    obj = await dbutil.upload_object(
        db, dbutil.BUCKET, f"{patient}/a.c3d", role="service_role", data=b"v1"
    )
    job = await _claim(db, uuid.uuid4())
    await db.execute(
        "select emgd.finish_job($1, $2, 'failed', 'first version was bad')",
        job["job_id"],
        job["lease_token"],
    )
    # A new version lands while the trigger is not there to see it (restore, replica, a bug).
    await db.execute("set session_replication_role = replica")
    await db.execute(
        "update storage.objects set version = 'v2', updated_at = now() where id = $1", obj["id"]
    )
    await db.execute("set session_replication_role = origin")
    assert await db.fetchval("select state from emgd.jobs where id = $1", job["job_id"]) == "failed"

    assert await db.fetchval("select emgd.catch_up()") == 1
    row = await db.fetchrow(
        "select j.state, j.attempts, j.object_version, s.object_version as session_version,"
        " s.status from emgd.jobs j join public.sessions s on s.id = j.session_id"
        " where j.id = $1",
        job["job_id"],
    )
    assert dict(row) == {
        "state": "pending",
        "attempts": 0,
        "object_version": "v2",
        "session_version": "v2",
        "status": "pending",
    }
    assert await db.fetchval("select emgd.catch_up()") == 0  # and only once


async def test_a_job_longer_than_its_lease_keeps_it_through_heartbeats(db_url, tmp_path):
    """Analysis takes 3 leases' time; the daemon's own rescue runs every second all along. Only
    its heartbeats keep the job its own: without them the rescue takes the job back, the commit
    is refused and the file runs again (attempts 2)."""
    settings = daemon_settings(
        db_url,
        tmp_path / "s",
        analysis_target=MISBEHAVE_TARGET,
        lease_seconds=2.0,
        heartbeat_interval=0.5,
    )
    patient = await make_patient(db_url)
    data = SLOW_MARKER + b"6\n" + ghostly_recording(seed=5, duration_s=8.0)[0]
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            sid = await upload(settings, db_url, data, patient, "long.c3d")
            rows = await wait_sessions(conn, [sid], timeout=60, daemon=d)
        row = rows[str(sid)]
        assert (row["status"], row["job_state"], row["attempts"]) == ("completed", "succeeded", 1)
        assert row["last_error"] is None
    finally:
        await conn.close()


async def test_the_backoff_grows_with_each_attempt(db_url, tmp_path):
    """Storage keeps failing: each retry waits longer than the one before (2 s ceiling, doubled
    per attempt, half of it at least), so a struggling Storage is not hammered at a fixed pace."""
    server = await start_storage_server(key="k")
    settings = daemon_settings(
        db_url,
        tmp_path / "s",
        storage_backend="supabase",
        supabase_url=server.url,
        supabase_service_role_key="k",
        storage_timeout=2.0,
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    delays: dict[int, float] = {}
    try:
        await conn.execute("update emgd.config set max_attempts = 10")
        async with running_daemon(settings, db_url) as d:
            server.fail_next(10_000)  # every request from now on: 503
            sid = await dbutil.make_session(conn, patient)
            for _ in range(600):
                row = await conn.fetchrow(
                    "select attempts, state,"
                    " extract(epoch from run_after - updated_at)::float8 as wait"
                    " from emgd.jobs where session_id = $1",
                    sid,
                )
                if row["state"] == "pending" and row["attempts"] > 0:
                    delays.setdefault(row["attempts"], row["wait"])
                if 3 in delays:
                    break
                d.check_alive()
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
        await server.stop()
    assert set(delays) >= {1, 2, 3}, delays
    assert 1.0 <= delays[1] <= 2.0, delays
    assert 2.0 <= delays[2] <= 4.0, delays
    assert 4.0 <= delays[3] <= 8.0, delays


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    monkeypatch.delenv("EMGD_STORAGE_BACKEND", raising=False)
