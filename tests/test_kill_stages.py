"""A daemon killed (SIGKILL) in any stage of a job, not only mid-analysis, and a daemon frozen
(SIGSTOP) past its lease: the job runs again elsewhere within seconds, completes exactly once
with the results a clean run gives, and the frozen daemon, once resumed, writes nothing.

Each job's completions are counted by a trigger in the same transaction as the state change, so
a job committed twice shows as two rows even though the second commit would look the same.
"""

from __future__ import annotations

import signal
import uuid

import pytest

from daemon.isolation import analyze_to_dict
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.e2e_harness import Daemons, job_of, wait_for, wait_job
from tests.storage_server import start_storage_server
from tests.test_e2e_processes import put

pytestmark = pytest.mark.e2e

COMPLETIONS = """
create schema test_log;
create table test_log.completions (
    session_id uuid not null, owner uuid, at timestamptz not null default clock_timestamp());
create function test_log.completed() returns trigger language plpgsql as $$
begin
    insert into test_log.completions (session_id, owner) values (new.session_id, old.lease_owner);
    return null;
end $$;
create trigger zz_test_completions after update on emgd.jobs
    for each row when (new.state = 'succeeded' and old.state is distinct from 'succeeded')
    execute function test_log.completed();
"""

# Long leases: only the dead owner's released lock, not an expiry, can free a job in time.
LONG_LEASE = {"EMGD_LEASE_SECONDS": 60, "EMGD_HEARTBEAT_INTERVAL": 1}


async def completions(db, session: str) -> list[uuid.UUID]:
    rows = await db.fetch(
        "select owner from test_log.completions where session_id = $1::uuid order by at", session
    )
    return [r["owner"] for r in rows]


async def assert_clean_result(db, session: str, data: bytes) -> None:
    clean = analyze_to_dict(data, "clean.c3d", {})
    expected = sum(len(c.get("contractions") or []) for c in clean["channels"])
    got = await db.fetchval(
        "select count(*) from public.contractions where session_id = $1::uuid", session
    )
    params = await db.fetchval(
        "select count(*) from public.session_parameters where session_id = $1::uuid", session
    )
    assert (got, params) == (expected, len(clean["channels"]))


async def test_killed_while_downloading(daemons: Daemons, db, patient):
    """The download drips (storage congested); the daemon is killed in the middle of it."""
    await db.execute(COMPLETIONS)
    data = ghostly_recording(seed=21, duration_s=6.0)[0]
    server = await start_storage_server(key="k")
    storage = {
        "EMGD_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": server.url,
        "SUPABASE_SERVICE_ROLE_KEY": "k",
        "EMGD_DOWNLOAD_TIMEOUT": 60,
    }
    try:
        a = await daemons.start_ready("a", **storage, **LONG_LEASE)
        server.drip, server.drip_bytes = 0.05, 1024  # about 20 KB/s: several seconds per file
        name = f"{patient}/dl.c3d"
        server.objects[("c3d-examples", name)] = data
        session = await _record(db, patient, name, data)
        await wait_job(db, session, timeout=20, state="running", lease_owner=a.owner)
        await wait_for(lambda: _get_started(server, name), timeout=10, what="the download")
        job = await job_of(db, session)
        assert job["stage"] == "downloading"
        a.proc.kill()
        b = await daemons.start_ready("b", **storage, **LONG_LEASE)
        server.drip = 0.0
        done = await wait_job(db, session, timeout=40, state="succeeded")
    finally:
        await server.stop()
    assert done["attempts"] == 2
    assert await completions(db, session) == [b.owner]
    await assert_clean_result(db, session, data)


async def test_killed_while_saving(daemons: Daemons, db, patient):
    """The commit of the results is slow (a busy database); the daemon dies during it. The
    server is told to notice a vanished client mid-statement, so the half-done commit is rolled
    back (without it the server may finish the commit alone, which is just as right) and the job
    must be rescued from its dead owner and run again."""
    await db.execute(COMPLETIONS)
    await db.execute(
        f'alter database "{dbutil.database_name(daemons.dsn)}"'
        " set client_connection_check_interval = '100ms'"
    )
    # The first commit for the session waits 4 s inside the results transaction.
    await db.execute(
        """
        create table test_log.slowed (session_id uuid primary key);
        create function test_log.slow_save() returns trigger language plpgsql as $$
        begin
            insert into test_log.slowed values (new.session_id) on conflict do nothing;
            if found then perform pg_sleep(4); end if;
            return new;
        end $$;
        create trigger aa_test_slow_save before insert on public.session_parameters
            for each row execute function test_log.slow_save();
        """
    )
    data = ghostly_recording(seed=22, duration_s=6.0)[0]
    a = await daemons.start_ready("a", **LONG_LEASE)
    session = await put(daemons, patient, data, "save.c3d")
    await wait_job(db, session, timeout=30, state="running", lease_owner=a.owner)
    # (the slowed commit is not visible from here until it ends: watch the server instead)
    await wait_for(
        lambda: db.fetchval("select count(*) from pg_stat_activity where wait_event = 'PgSleep'"),
        timeout=10,
        what="the save",
    )
    a.proc.kill()
    b = await daemons.start_ready("b", **LONG_LEASE)
    done = await wait_job(db, session, timeout=40, state="succeeded")
    assert await completions(db, session) == [b.owner]
    assert done["attempts"] == 2
    await assert_clean_result(db, session, data)


async def test_frozen_past_the_lease_then_resumed_writes_nothing(daemons: Daemons, db, patient):
    await db.execute(COMPLETIONS)
    data = ghostly_recording(seed=23, duration_s=6.0)[0]
    slow = {
        "EMGD_ANALYSIS_TARGET": "tests.isolation_targets:slow_analysis",
        "EMGD_TEST_ANALYSIS_DELAY": 4,
        "EMGD_LEASE_SECONDS": 2,
        "EMGD_HEARTBEAT_INTERVAL": 0.5,
    }
    a = await daemons.start_ready("a", **slow)
    session = await put(daemons, patient, data, "frozen.c3d")
    await wait_job(db, session, timeout=20, state="running", stage="analysing", lease_owner=a.owner)
    a.signal(signal.SIGSTOP)
    try:
        b = await daemons.start_ready("b", **slow)
        await wait_job(db, session, timeout=30, state="succeeded")
        assert await completions(db, session) == [b.owner]
        before = await _results(db, session)
    finally:
        a.signal(signal.SIGCONT)
    # a wakes up holding a job it lost: its analysis ends, its commit must be refused
    await wait_for(
        lambda: any(e.get("outcome") == "lease_lost" for e in a.events("job_finished")),
        timeout=30,
        what="a's refused commit",
    )
    assert await completions(db, session) == [b.owner]
    assert await _results(db, session) == before
    assert a.proc.poll() is None  # and it carries on


async def _results(db, session: str) -> list:
    rows = await db.fetch(
        "select channel, contraction_index, start_ms, end_ms, created_at from public.contractions"
        " where session_id = $1::uuid order by channel, contraction_index",
        session,
    )
    return [tuple(r) for r in rows]


def _get_started(server, name: str) -> bool:
    return ("GET", "c3d-examples", name) in server.requests


async def _record(db, patient: uuid.UUID, name: str, data: bytes) -> str:
    from daemon import local
    from daemon.storage import object_metadata

    metadata = object_metadata(data, "application/octet-stream")
    return str(await local.record_object(db, await local.bucket(db), name, patient, metadata))
