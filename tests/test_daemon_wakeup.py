"""How work reaches the daemon: NOTIFY wakes it at once; without LISTEN the poll still gets
everything; uploads made while it was down, or while the storage trigger was off, are found at
start."""

from __future__ import annotations

import asyncio
import time

from daemon.local import upload
from tests import dbutil
from tests.daemon_harness import (
    NotifyDroppingProxy,
    daemon_settings,
    free_port,
    make_patient,
    metric,
    recording,
    running_daemon,
    session_for,
    wait_metric,
    wait_sessions,
)

# Far longer than any wait below: only a NOTIFY (or the start) can wake the daemon in time.
IDLE_POLL_S = 60.0
# Upload to results through a NOTIFY takes ~0.2 s (a few seconds on a loaded CI machine); the
# bound sits far above that and far below the poll, so only a missed wake-up can break it.
WAKE_BOUND_S = IDLE_POLL_S / 6


async def process_three(settings, dsn: str, conn, patient, d) -> str:
    """Upload three recordings, wait until the daemon completed them; its /metrics text then."""
    sids = [
        await upload(settings, dsn, recording(seed), patient, f"r{seed}.c3d") for seed in (1, 2, 3)
    ]
    rows = await wait_sessions(conn, sids, daemon=d)
    assert {r["status"] for r in rows.values()} == {"completed"}
    return await wait_metric(
        settings.health_port, "emgd_jobs_finished_total", 3, labels={"outcome": "succeeded"}
    )


async def test_notify_wakes_an_idle_daemon_at_once(db_url, tmp_path):
    port = free_port()
    settings = daemon_settings(
        db_url, tmp_path / "s", poll_interval=IDLE_POLL_S, health_port=port, concurrency=2
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            assert d.daemon.listener.mode == "listening"
            # let the start-up claim passes (the first one, the one after the catch-up) end, so
            # the uploads below are claimed on their NOTIFY and not by one of those passes
            await asyncio.sleep(1.0)
            latencies = []
            for seed in (1, 2):
                started = time.monotonic()
                sid = await upload(settings, db_url, recording(seed), patient, f"r{seed}.c3d")
                await wait_sessions(conn, [sid], timeout=IDLE_POLL_S / 2, daemon=d)
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.3)
            text = await wait_metric(
                port, "emgd_jobs_finished_total", 2, labels={"outcome": "succeeded"}
            )
        assert max(latencies) < WAKE_BOUND_S, f"upload to result took {latencies} s"
        assert metric(text, "emgd_notifications_total") >= 2
        assert metric(text, "emgd_notify_to_claim_seconds_count") == 2
        # a wake-up is a hint handled within milliseconds, not a poll tick (1 s: the largest
        # bucket, far above the typical latency even on a loaded machine)
        assert metric(text, "emgd_notify_to_claim_seconds_bucket", le="1.0") == 2
    finally:
        await conn.close()


async def test_with_listen_disabled_the_poll_processes_everything(db_url, tmp_path):
    port = free_port()
    settings = daemon_settings(
        db_url, tmp_path / "s", listen=False, poll_interval=0.3, health_port=port
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            assert d.daemon.listener.mode == "poll"
            ready, details = await d.daemon.readiness()
            assert ready and details["listener_mode"] == "poll"
            text = await process_three(settings, db_url, conn, patient, d)
        assert metric(text, "emgd_notifications_total") == 0, "nothing was listening"
        assert metric(text, "emgd_notify_to_claim_seconds_count") == 0
    finally:
        await conn.close()


async def test_a_connection_that_accepts_listen_but_never_delivers_falls_back_to_polling(
    db_url, tmp_path
):
    # Every daemon connection goes through a proxy that drops notifications: LISTEN succeeds,
    # nothing ever arrives, as behind Supabase's transaction pooler (port 6543).
    proxy = await NotifyDroppingProxy(db_url).start()
    port = free_port()
    settings = daemon_settings(
        proxy.dsn, tmp_path / "s", poll_interval=0.3, health_port=port, concurrency=2
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, proxy.dsn) as d:
            listener = d.daemon.listener
            assert listener.mode == "poll"
            assert "notifications do not arrive" in listener.reason
            text = await process_three(settings, db_url, conn, patient, d)
        assert proxy.dropped >= 1, "the self-probe (at least) was sent and swallowed"
        assert metric(text, "emgd_notifications_total") == 0
    finally:
        await conn.close()
        await proxy.stop()


async def test_uploads_made_while_the_daemon_was_down_are_processed_when_it_starts(
    db_url, tmp_path
):
    settings = daemon_settings(db_url, tmp_path / "s", poll_interval=IDLE_POLL_S)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        sids = [
            await upload(settings, db_url, recording(seed), patient, f"r{seed}.c3d")
            for seed in (1, 2, 3)
        ]
        waiting = await wait_sessions(conn, sids, statuses=["pending"], timeout=0)
        assert {r["job_state"] for r in waiting.values()} == {"pending"}
        async with running_daemon(settings, db_url) as d:
            # counted from readiness, not from the process start (imports and worker warm-up
            # take seconds on a loaded machine): only the start's own claim pass is this quick
            rows = await wait_sessions(conn, sids, timeout=WAKE_BOUND_S, daemon=d)
        assert {r["status"] for r in rows.values()} == {"completed"}
    finally:
        await conn.close()


async def test_objects_stored_while_the_trigger_was_off_are_found_by_the_catch_up(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "s", poll_interval=IDLE_POLL_S)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        # as a superuser, in this test's private database: the trigger stays off throughout,
        # so only the daemon's catch-up at start can turn these objects into jobs
        await conn.execute("alter table storage.objects disable trigger user")
        names = []
        for seed in (1, 2):
            await upload(settings, db_url, recording(seed), patient, f"r{seed}.c3d")
            names.append(f"{patient}/r{seed}.c3d")
        assert await conn.fetchval("select count(*) from storage.objects") == 2
        assert await conn.fetchval("select count(*) from public.sessions") == 0
        async with running_daemon(settings, db_url) as d:
            deadline = time.monotonic() + WAKE_BOUND_S
            while not all(sids := [await session_for(conn, name) for name in names]):
                assert time.monotonic() < deadline, "the catch-up should create the sessions"
                await asyncio.sleep(0.02)
            rows = await wait_sessions(conn, sids, timeout=WAKE_BOUND_S, daemon=d)
        assert {r["status"] for r in rows.values()} == {"completed"}
        assert {r["patient_id"] for r in rows.values()} == {patient}
    finally:
        await conn.close()
