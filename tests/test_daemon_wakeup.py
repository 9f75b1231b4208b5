"""How work reaches the daemon: NOTIFY wakes it at once; without LISTEN the poll still gets
everything; uploads made while it was down, or while the storage trigger was off, are found at
start."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from daemon.cmd_upload import upload
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import (
    NotifyDroppingProxy,
    daemon_settings,
    free_port,
    make_patient,
    metric,
    running_daemon,
    session_for,
    wait_sessions,
)

IDLE_POLL_S = 30.0  # far longer than any wait below: only a NOTIFY (or the start) can wake it


def recording(seed: int) -> bytes:
    return ghostly_recording(seed=seed, duration_s=10.0)[0]


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


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
            await asyncio.sleep(0.5)  # let the claim loop settle into its 30-second sleep
            latencies = []
            for seed in (1, 2):
                started = time.monotonic()
                sid = await upload(settings, db_url, recording(seed), patient, f"r{seed}.c3d")
                await wait_sessions(conn, [sid], timeout=IDLE_POLL_S / 3, daemon=d)
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.3)
            text = await scrape(port)
        assert max(latencies) < 3.0, f"upload to result took {latencies} s with a 30 s poll"
        assert metric(text, "emgd_notifications_total") >= 2
        assert metric(text, "emgd_notify_to_claim_seconds_count") == 2
        # a wake-up is a hint handled within milliseconds, not a poll tick
        assert metric(text, "emgd_notify_to_claim_seconds_bucket", le="0.5") == 2
        assert metric(text, "emgd_jobs_finished_total", outcome="succeeded") == 2
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
            sids = [
                await upload(settings, db_url, recording(seed), patient, f"r{seed}.c3d")
                for seed in (1, 2, 3)
            ]
            rows = await wait_sessions(conn, sids, daemon=d)
            text = await scrape(port)
        assert {r["status"] for r in rows.values()} == {"completed"}
        assert metric(text, "emgd_notifications_total") == 0, "nothing was listening"
        assert metric(text, "emgd_notify_to_claim_seconds_count") == 0
        assert metric(text, "emgd_jobs_finished_total", outcome="succeeded") == 3
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
            sids = [
                await upload(settings, db_url, recording(seed), patient, f"r{seed}.c3d")
                for seed in (1, 2, 3)
            ]
            rows = await wait_sessions(conn, sids, daemon=d)
            text = await scrape(port)
        assert {r["status"] for r in rows.values()} == {"completed"}
        assert proxy.dropped >= 1, "the self-probe (at least) was sent and swallowed"
        assert metric(text, "emgd_notifications_total") == 0
        assert metric(text, "emgd_jobs_finished_total", outcome="succeeded") == 3
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
        started = time.monotonic()
        async with running_daemon(settings, db_url) as d:
            rows = await wait_sessions(conn, sids, timeout=IDLE_POLL_S / 3, daemon=d)
        assert {r["status"] for r in rows.values()} == {"completed"}
        assert time.monotonic() - started < IDLE_POLL_S / 3
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
            deadline = time.monotonic() + 5
            while not all(sids := [await session_for(conn, name) for name in names]):
                assert time.monotonic() < deadline, "the catch-up should create the sessions"
                await asyncio.sleep(0.02)
            rows = await wait_sessions(conn, sids, timeout=IDLE_POLL_S / 3, daemon=d)
        assert {r["status"] for r in rows.values()} == {"completed"}
        assert {r["patient_id"] for r in rows.values()} == {patient}
    finally:
        await conn.close()
