"""The daemon in-process on a real PostgreSQL: upload -> results, the stages on the way, the
production storage path over real HTTP (404 permanent, 503 retried), and the drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time

import aiohttp
import pytest
from structlog.testing import capture_logs

from daemon.local import upload
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import (
    BUCKET,
    MISBEHAVE_TARGET,
    daemon_settings,
    free_port,
    install_stage_log,
    make_patient,
    running_daemon,
    session_for,
    stage_log,
    wait_sessions,
)
from tests.isolation_targets import SLOW_MARKER
from tests.storage_server import start_storage_server

KEY = "test-service-role-key"
ONSET_TOLERANCE_MS = 100.0

HAPPY_PATH = [
    ("pending", "queued"),
    ("processing", "downloading"),
    ("processing", "analysing"),
    ("completed", "done"),
]


async def assert_matches_truth(conn, session_id, truth) -> None:
    rows = await conn.fetch(
        "select channel, contraction_index, start_ms from public.contractions"
        " where session_id = $1 order by channel, contraction_index",
        session_id,
    )
    params = await conn.fetch(
        "select name, contractions_total from public.session_parameters where session_id = $1",
        session_id,
    )
    assert sorted(p["name"] for p in params) == sorted(truth.channels)
    totals = {p["name"]: p["contractions_total"] for p in params}
    for channel in truth.channels:
        bursts = truth.bursts_for(channel)
        found = [r["start_ms"] for r in rows if r["channel"] == channel]
        assert bursts, "the recording should hold contractions on every channel"
        assert len(found) == len(bursts) == totals[channel], (channel, found, bursts)
        for start_ms, burst in zip(found, bursts, strict=True):
            error = start_ms - burst.start_s * 1000
            assert abs(error) <= ONSET_TOLERANCE_MS, f"{channel} onset off by {error:.0f} ms"


async def test_uploads_become_results_matching_ground_truth_through_every_stage(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "storage", concurrency=2)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        await install_stage_log(conn)
        async with running_daemon(settings, db_url) as d:
            uploads = {}
            for seed in (1, 2, 3):
                data, truth = ghostly_recording(seed=seed, duration_s=20.0 + 5 * seed)
                sid = await upload(settings, db_url, data, patient, f"rec-{seed}.c3d")
                uploads[sid] = (truth, len(data))
            rows = await wait_sessions(conn, uploads, daemon=d)
        for sid, (truth, size) in uploads.items():
            row = rows[sid]
            assert (row["status"], row["stage"], row["error"]) == ("completed", "done", None)
            assert row["job_state"] == "succeeded" and row["attempts"] == 1
            assert row["file_size"] == size and row["progress"] == 1
            assert row["duration_s"] == pytest.approx(truth.duration_s, abs=0.01)
            assert row["patient_id"] == patient and row["processed_at"] is not None
            await assert_matches_truth(conn, row["id"], truth)
            # the trigger logs each change in commit order: every stage was visible to the app
            assert await stage_log(conn, sid) == HAPPY_PATH
    finally:
        await conn.close()


# --- Supabase Storage over real HTTP -----------------------------------------------------------


def supabase_settings(db_url, tmp_path, server, **overrides):
    return daemon_settings(
        db_url,
        tmp_path / "unused",
        storage_backend="supabase",
        supabase_url=server.url,
        supabase_service_role_key=KEY,
        **overrides,
    )


async def test_supabase_storage_path_serves_uploads_and_a_missing_object_fails_for_good(
    db_url, tmp_path
):
    server = await start_storage_server(key=KEY)
    settings = supabase_settings(db_url, tmp_path, server)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            data, truth = ghostly_recording(seed=4, duration_s=20.0)
            # the upload itself goes through the stand-in too (storage3 multipart POST)
            good = await upload(settings, db_url, data, patient, "good.c3d")
            assert server.objects[(BUCKET, f"{patient}/good.c3d")] == data
            # Storage's row without its bytes: what a deleted or never-stored object looks like
            gone = await dbutil.upload_object(
                conn, BUCKET, f"{patient}/gone.c3d", user_id=patient, data=data
            )
            gone_sid = await conn.fetchval(
                "select id from public.sessions where object_name = $1", gone["name"]
            )
            rows = await wait_sessions(conn, [good, gone_sid], daemon=d)
        assert rows[good]["status"] == "completed"
        await assert_matches_truth(conn, rows[good]["id"], truth)
        lost = rows[str(gone_sid)]
        assert lost["status"] == "failed" and lost["job_state"] == "failed"
        assert lost["attempts"] == 1, "a missing object must not be retried"
        assert lost["last_error"] == f"object not found: {BUCKET}/{patient}/gone.c3d"
        assert lost["error"] == "The file of this recording is no longer in storage."
        gets = [r for r in server.requests if r[0] == "GET" and r[2] == f"{patient}/gone.c3d"]
        assert len(gets) == 1, "a 404 is permanent: one request, no in-process retries either"
    finally:
        await conn.close()
        await server.stop()


async def test_supabase_storage_503_goes_back_to_pending_then_succeeds(db_url, tmp_path):
    server = await start_storage_server(key=KEY)
    settings = supabase_settings(db_url, tmp_path, server)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        await install_stage_log(conn)
        async with running_daemon(settings, db_url) as d:
            data, truth = ghostly_recording(seed=5, duration_s=15.0)
            name = f"{patient}/flaky.c3d"
            server.objects[(BUCKET, name)] = data
            # one more 503 than the backend retries in-process (3 tries per attempt): the first
            # attempt gives up and the job waits in pending with a run_after, the second succeeds
            await first_credential_check(server, d)  # the 503s are for the job's reads
            server.fail_next(4)
            await dbutil.upload_object(conn, BUCKET, name, user_id=patient, data=data)
            sid = str(
                await conn.fetchval("select id from public.sessions where object_name = $1", name)
            )
            # pending again after a claim, not the pending it starts in before the first claim
            retrying = await wait_sessions(
                conn, [sid], statuses=["pending"], daemon=d, until=lambda r: r["attempts"] >= 1
            )
            assert retrying[sid]["attempts"] == 1
            assert "storage unavailable" in retrying[sid]["last_error"]
            assert "503" in retrying[sid]["last_error"]
            now = await conn.fetchval("select now()")
            assert retrying[sid]["run_after"] > now, "a retry waits for its backoff"
            rows = await wait_sessions(conn, [sid], daemon=d)
            # the picture follows the results and reads the recording once more: wait for it,
            # so the count of reads below does not depend on how far it got
            await wait_sessions(
                conn, [sid], daemon=d, until=lambda r: r["report_path"] is not None, timeout=60
            )
        row = rows[sid]
        assert row["status"] == "completed" and row["job_state"] == "succeeded"
        assert row["attempts"] == 2 and row["last_error"] is None
        await assert_matches_truth(conn, row["id"], truth)
        gets = [r for r in server.requests if r[0] == "GET" and r[2] == name]
        assert len(gets) == 6  # 3 failed + (1 failed, 1 served) + the picture's read
        log = await stage_log(conn, sid)
        # the failed attempt got as far as downloading, then handed the job back to pending
        assert log[:2] == HAPPY_PATH[:2]
        assert log[2] == ("pending", "queued"), "the failed attempt hands the job back to pending"
        assert log[3:] == HAPPY_PATH[1:]
    finally:
        await conn.close()
        await server.stop()


async def test_supabase_storage_503_until_max_attempts_fails_with_the_reason(db_url, tmp_path):
    server = await start_storage_server(key=KEY)
    settings = supabase_settings(db_url, tmp_path, server)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        await conn.execute("update emgd.config set max_attempts = 2")
        async with running_daemon(settings, db_url) as d:
            data, _ = ghostly_recording(seed=8, duration_s=10.0)
            name = f"{patient}/down.c3d"
            server.objects[(BUCKET, name)] = data
            await first_credential_check(server, d)
            server.fail_next(1000)  # storage stays down
            await dbutil.upload_object(conn, BUCKET, name, user_id=patient, data=data)
            sid = await session_for(conn, name)
            row = (await wait_sessions(conn, [sid], daemon=d))[str(sid)]
        assert (row["status"], row["job_state"], row["attempts"]) == ("failed", "failed", 2)
        assert row["last_error"].startswith("storage unavailable: storage error 503")
        assert row["last_error"].endswith("(gave up after 2 attempts)")
        assert "could not be downloaded" in row["error"] and "503" not in row["error"]
        assert len([r for r in server.requests if r[2] == name]) == 6  # 2 attempts x 3 tries
    finally:
        await conn.close()
        await server.stop()


# --- drain on shutdown -------------------------------------------------------------------------


def slow(seconds: float, seed: int) -> bytes:
    data, _ = ghostly_recording(seed=seed, duration_s=10.0)
    return SLOW_MARKER + f"{seconds}\n".encode() + data


async def wait_stage(conn, sid, stage, d, timeout=20.0):
    deadline = time.monotonic() + timeout
    while await conn.fetchval("select stage from public.sessions where id = $1", sid) != stage:
        d.check_alive()
        assert time.monotonic() < deadline, f"session never reached {stage}"
        await asyncio.sleep(0.01)


async def wait_in_flight(d, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while (await d.daemon.readiness())[1]["in_flight"] != count:
        d.check_alive()
        assert time.monotonic() < deadline, f"never {count} job(s) in flight"
        await asyncio.sleep(0.01)


async def test_stop_lets_the_job_in_flight_finish_and_reports_not_ready(db_url, tmp_path):
    port = free_port()
    settings = daemon_settings(
        db_url,
        tmp_path / "storage",
        analysis_target=MISBEHAVE_TARGET,
        shutdown_grace=10.0,
        health_port=port,
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with (
            running_daemon(settings, db_url) as d,
            aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http,
        ):
            async with http.get("/readyz") as resp:
                assert resp.status == 200
            sid = await upload(settings, db_url, slow(1.0, seed=6), patient, "slow.c3d")
            await wait_stage(conn, sid, "analysing", d)
            started = time.monotonic()
            d.daemon.request_stop()
            ready, details = await d.daemon.readiness()
            assert not ready and "draining" in details["not_ready"]
            async with http.get("/readyz") as resp:
                body = await resp.json()
                assert resp.status == 503 and "draining" in body["not_ready"]
            code = await asyncio.wait_for(d.task, 15)
            assert code == 0
            assert time.monotonic() - started < settings.shutdown_grace
        row = (await wait_sessions(conn, [sid], timeout=0))[sid]
        assert row["status"] == "completed" and row["attempts"] == 1
        assert await conn.fetchval(
            "select count(*) from public.contractions where session_id = $1", row["id"]
        )
    finally:
        await conn.close()


async def test_a_job_longer_than_the_grace_period_is_released_without_costing_an_attempt(
    db_url, tmp_path
):
    settings = daemon_settings(
        db_url, tmp_path / "storage", analysis_target=MISBEHAVE_TARGET, shutdown_grace=0.3
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            # an analysis far longer than any stop: the bound below (grace + cancel + release,
            # slow only on a loaded machine) stays far from it either way
            sid = await upload(settings, db_url, slow(60.0, seed=7), patient, "slow.c3d")
            await wait_stage(conn, sid, "analysing", d)
            started = time.monotonic()
            assert await d.stop() == 0
            assert time.monotonic() - started < 20.0, "the drain must not wait for the analysis"
        row = (await wait_sessions(conn, [sid], statuses=["pending"], timeout=0))[sid]
        assert (row["job_state"], row["stage"], row["error"]) == ("pending", "queued", None)
        assert row["attempts"] == 0, "a release must not count as an attempt"
        assert row["run_after"] <= await conn.fetchval("select now()")
        assert row["processed_at"] is None
        assert not await conn.fetchval(
            "select count(*) from public.session_parameters where session_id = $1", row["id"]
        )
        job = await conn.fetchrow("select * from emgd.jobs where session_id = $1", row["id"])
        assert job["lease_owner"] is None and job["lease_token"] is None
    finally:
        await conn.close()


async def test_a_file_overwritten_mid_analysis_is_tracked_and_drained_as_its_new_version(
    db_url, tmp_path
):
    # The overwrite re-queues the same job (same id) while the first version is still analysing;
    # with a free slot the daemon claims it again at once, so two tasks share one job id. The new
    # one must stay in flight (drained at stop, heartbeats) when the superseded one ends.
    settings = daemon_settings(
        db_url, tmp_path / "storage", analysis_target=MISBEHAVE_TARGET, concurrency=2
    )
    patient = await make_patient(db_url)
    first, second = slow(1.0, seed=9), slow(4.0, seed=10)
    conn = await dbutil.connect(db_url)
    try:
        await install_stage_log(conn)
        async with running_daemon(settings, db_url) as d:
            sid = await upload(settings, db_url, first, patient, "overwritten.c3d")
            await wait_stage(conn, sid, "analysing", d)
            await upload(settings, db_url, second, patient, "overwritten.c3d")
            # the new version is claimed while the first is still being analysed
            deadline = time.monotonic() + 20
            while (await stage_log(conn, sid)).count(("processing", "downloading")) < 2:
                assert time.monotonic() < deadline, await stage_log(conn, sid)
                await asyncio.sleep(0.01)
            # both versions in flight, then the first one's analysis ends (its lease is gone):
            # waited for, not slept for, so the checks below always run after that end
            await wait_in_flight(d, 2)
            await wait_in_flight(d, 1)
            assert (
                await conn.fetchval("select state from emgd.jobs where session_id = $1::uuid", sid)
                == "running"
            )
            assert await d.stop() == 0
        row = (await wait_sessions(conn, [sid], timeout=0))[sid]
        assert (row["status"], row["job_state"]) == ("completed", "succeeded")
        assert row["content_sha256"] == hashlib.sha256(second).hexdigest()
    finally:
        await conn.close()


# --- storage credentials -----------------------------------------------------------------------


async def readiness(port: int) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http,
        http.get("/readyz") as resp,
    ):
        return resp.status, await resp.json()


async def wait_readiness(port: int, d, want: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d.check_alive()
        with contextlib.suppress(aiohttp.ClientError):
            status, body = await readiness(port)
            if status == want:
                return body
        assert time.monotonic() < deadline, f"/readyz never answered {want}"
        await asyncio.sleep(0.05)


async def first_credential_check(server, d, timeout: float = 30.0) -> None:
    """Wait until the daemon has asked Storage about its bucket: its first credential check
    runs on the claim loop's first pass, which may come after ``running_daemon`` returns."""
    deadline = time.monotonic() + timeout
    while ("GET", BUCKET, "") not in server.requests:
        d.check_alive()
        assert time.monotonic() < deadline, "the credentials were never checked"
        await asyncio.sleep(0.05)


def storage_events(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["event"] in ("storage_not_configured", "storage_configured")]


async def test_a_rejected_key_at_start_waits_on_readyz_and_the_fix_resumes_the_job(
    db_url, tmp_path
):
    """Real Storage treats a wrong key as anon ("Bucket not found"): the daemon says so, claims
    nothing, and once the key is accepted the waiting job runs, with no requeue by hand."""
    server = await start_storage_server(key="the-project-s-actual-key")
    port = free_port()
    settings = supabase_settings(db_url, tmp_path, server, health_port=port)
    patient = await make_patient(db_url)
    data, truth = ghostly_recording(seed=6, duration_s=10.0)
    name = f"{patient}/waiting.c3d"
    server.objects[(BUCKET, name)] = data
    conn = await dbutil.connect(db_url)
    try:
        with capture_logs() as logs:
            async with running_daemon(settings, db_url, wait_ready=False) as d:
                await dbutil.upload_object(conn, BUCKET, name, user_id=patient, data=data)
                sid = await session_for(conn, name)
                body = await wait_readiness(port, d, 503)
                assert "SUPABASE_SERVICE_ROLE_KEY" in body["not_ready"]["storage"]
                # states and counts only: no key, no owner id, no error text
                assert set(body) == {"status", "listener_mode", "in_flight", "not_ready"}
                assert KEY not in json.dumps(body) and str(d.daemon.owner) not in json.dumps(body)
                row = (await wait_sessions(conn, [sid], statuses=["pending"], daemon=d))[str(sid)]
                assert (row["attempts"], row["error"]) == (0, None)
                assert not [r for r in server.requests if r[2] == name], "nothing was claimed"

                server.key = KEY  # the key is right again (rotated back, or the secret fixed)
                row = (await wait_sessions(conn, [sid], daemon=d))[str(sid)]
                await wait_readiness(port, d, 200)
        assert (row["status"], row["job_state"], row["attempts"]) == ("completed", "succeeded", 1)
        await assert_matches_truth(conn, row["id"], truth)
        events = storage_events(logs)
        assert [e["event"] for e in events] == ["storage_not_configured", "storage_configured"]
        assert events[0]["variable"] == "SUPABASE_SERVICE_ROLE_KEY"
        assert "rejects SUPABASE_SERVICE_ROLE_KEY" in events[0]["error"]
        assert all(KEY not in json.dumps(e, default=str) for e in logs)
    finally:
        await conn.close()
        await server.stop()


async def test_a_key_rejected_mid_run_hands_the_job_back_instead_of_failing_it(db_url, tmp_path):
    server = await start_storage_server(key=KEY)
    port = free_port()
    settings = supabase_settings(db_url, tmp_path, server, health_port=port)
    patient = await make_patient(db_url)
    data, _ = ghostly_recording(seed=7, duration_s=10.0)
    name = f"{patient}/revoked.c3d"
    server.objects[(BUCKET, name)] = data
    conn = await dbutil.connect(db_url)
    try:
        with capture_logs() as logs:
            async with running_daemon(settings, db_url) as d:
                # the key is rotated after the daemon's first credential check passed, so it
                # meets the new key on a job's download, not at start
                await first_credential_check(server, d)
                server.key = "a-new-key-the-daemon-lacks"  # the project's key was rotated
                await dbutil.upload_object(conn, BUCKET, name, user_id=patient, data=data)
                sid = await session_for(conn, name)
                await wait_readiness(port, d, 503)
                row = (
                    await wait_sessions(
                        conn,
                        [sid],
                        statuses=["pending"],
                        daemon=d,
                        until=lambda _r: any(r[2] == name for r in server.requests),
                    )
                )[str(sid)]
                assert (row["attempts"], row["error"]) == (0, None), "the attempt is not counted"
                assert row["job_state"] == "pending"

                server.key = KEY
                row = (await wait_sessions(conn, [sid], daemon=d))[str(sid)]
        assert (row["status"], row["attempts"], row["error"]) == ("completed", 1, None)
        assert [e["event"] for e in storage_events(logs)] == [
            "storage_not_configured",
            "storage_configured",
        ]
    finally:
        await conn.close()
        await server.stop()


async def test_a_single_bucket_not_found_the_check_contradicts_is_retried_like_a_glitch(
    db_url, tmp_path
):
    """ "Bucket not found" for a while although the key is good (a proxy's hiccup): the check
    passes, so the daemon does not stop claiming; the job retries like any storage trouble."""
    server = await start_storage_server(key=KEY)
    settings = supabase_settings(db_url, tmp_path, server)
    patient = await make_patient(db_url)
    data, _ = ghostly_recording(seed=9, duration_s=10.0)
    name = f"{patient}/hiccup.c3d"
    server.objects[(BUCKET, name)] = data
    bucket_not_found = json.dumps(
        {
            "statusCode": "404",
            "code": "NoSuchBucket",
            "error": "Bucket not found",
            "message": "Bucket not found",
        }
    )
    conn = await dbutil.connect(db_url)
    try:
        with capture_logs() as logs:
            async with running_daemon(settings, db_url) as d:
                # the hiccup must meet the job's download, not the start-up credential check
                await first_credential_check(server, d)
                # as many as the backend's in-process retries: the first attempt gives up
                server.fail_next(3, status=400, body=bucket_not_found)
                await dbutil.upload_object(conn, BUCKET, name, user_id=patient, data=data)
                sid = await session_for(conn, name)
                row = (await wait_sessions(conn, [sid], daemon=d))[str(sid)]
        assert (row["status"], row["attempts"]) == ("completed", 2)
        assert storage_events(logs) == []
    finally:
        await conn.close()
        await server.stop()


async def test_the_daemons_download_folder_holds_only_jobs_in_flight_and_goes_with_it(
    db_url, tmp_path
):
    """One folder per daemon (named for its host and pid, so a later daemon can sweep it if this
    one is killed), one file per job in flight, and nothing left once the daemon stops."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    settings = daemon_settings(db_url, tmp_path / "storage", download_dir=downloads)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            uploads = {}
            for seed in (4, 5):
                data, _ = ghostly_recording(seed=seed, duration_s=8.0)
                uploads[await upload(settings, db_url, data, patient, f"dl-{seed}.c3d")] = None
            await wait_sessions(conn, uploads, daemon=d)
            folders = list(downloads.iterdir())
            assert len(folders) == 1 and folders[0].name.startswith("emgd-job-")
            assert folders[0].name.split("-")[-2] == str(os.getpid())  # the daemon runs here
            assert list(folders[0].iterdir()) == []  # each job's file went with the job
        assert list(downloads.iterdir()) == []
    finally:
        await conn.close()
