"""Bad files, crashing workers and stale leases cost one job each, never the daemon or the data:
each hostile upload ends failed with a clear reason while the next uploads complete; a commit
with a lost lease writes nothing; a requeued session is picked up again at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid

import numpy as np

from daemon.isolation import analyze_to_dict
from daemon.local import upload
from emg_core.synthetic import c3d_bytes
from tests import dbutil
from tests.core.helpers import VENDOR_DIR
from tests.daemon_harness import (
    BUCKET,
    MISBEHAVE_TARGET,
    daemon_settings,
    install_stage_log,
    make_patient,
    recording,
    result_rows,
    running_daemon,
    stage_log,
    wait_sessions,
)
from tests.isolation_targets import CRASH_MARKER

VICON = VENDOR_DIR / "Vicon.c3d"


def force_plate_only() -> bytes:
    """A valid C3D whose analog channels are all force-plate signals: nothing to analyse."""
    labels = ("Fx1", "Fy1", "Fz1", "Mx1", "My1", "Mz1")
    data = np.random.default_rng(3).normal(0.0, 5.0, size=(len(labels), 10_000))
    return c3d_bytes(labels, data, 1000.0, units="N")


async def test_hostile_uploads_fail_with_a_reason_and_the_daemon_keeps_going(db_url, tmp_path):
    settings = daemon_settings(
        db_url, tmp_path / "s", analysis_target=MISBEHAVE_TARGET, concurrency=2
    )
    patient = await make_patient(db_url)
    good_bytes = recording(1)
    hostile = {
        "corrupt.c3d": (os.urandom(50_000), "not a C3D file"),
        "empty.c3d": (b"", "the file is empty (0 bytes)"),
        "truncated.c3d": (good_bytes[: len(good_bytes) // 2], "the C3D file is truncated"),
        "force-plates.c3d": (force_plate_only(), "found no EMG channel"),
        # a valid recording, but the worker segfaults on it (injected: see isolation_targets)
        "crash.c3d": (CRASH_MARKER + recording(2), "segmentation fault (SIGSEGV)"),
    }
    if VICON.exists():  # a vendor recording cut short as well, when the shared folder is there
        vicon = VICON.read_bytes()
        hostile["vicon-truncated.c3d"] = (
            vicon[: len(vicon) * 9 // 10],
            "the C3D file is truncated",
        )
    conn = await dbutil.connect(db_url)
    try:
        await install_stage_log(conn)
        async with running_daemon(settings, db_url) as d:
            sids = {
                name: await upload(settings, db_url, data, patient, name)
                for name, (data, _) in hostile.items()
            }
            sids["before.c3d"] = await upload(settings, db_url, good_bytes, patient, "before.c3d")
            rows = await wait_sessions(conn, sids.values(), daemon=d)
            # after every failure, including two worker crashes, the daemon still works
            after = [
                await upload(settings, db_url, recording(seed), patient, f"after-{seed}.c3d")
                for seed in (3, 4)
            ]
            rows.update(await wait_sessions(conn, after, daemon=d))
        for name, (_, reason) in hostile.items():
            row = rows[sids[name]]
            assert (row["status"], row["stage"]) == ("failed", "failed"), name
            assert reason in row["last_error"], (name, row["last_error"])
            if name != "crash.c3d":  # about the file: the app shows the same sentence
                assert row["error"] == row["last_error"], name
            assert row["processed_at"] is None, name
            assert not await conn.fetchval(
                "select count(*) from public.session_parameters where session_id = $1", row["id"]
            )
        for name in set(hostile) - {"crash.c3d"}:
            row = rows[sids[name]]
            assert (row["job_state"], row["attempts"], row["crashes"]) == ("failed", 1, 0), name
        crash = rows[sids["crash.c3d"]]
        assert (crash["job_state"], crash["attempts"], crash["crashes"]) == ("quarantined", 2, 2)
        assert "quarantined" in crash["last_error"] and "set aside" in crash["error"]
        # retried once (back to pending after the first crash), then quarantined
        assert await stage_log(conn, sids["crash.c3d"]) == [
            ("pending", "queued"),
            ("processing", "downloading"),
            ("processing", "analysing"),
            ("pending", "queued"),
            ("processing", "downloading"),
            ("processing", "analysing"),
            ("failed", "failed"),
        ]
        for sid in [sids["before.c3d"], *after]:
            assert rows[sid]["status"] == "completed" and rows[sid]["attempts"] == 1
            assert await conn.fetchval(
                "select count(*) from public.contractions where session_id = $1", rows[sid]["id"]
            )
    finally:
        await conn.close()


async def test_a_late_commit_with_a_lost_lease_writes_nothing(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "s", lease_seconds=2.0)
    patient = await make_patient(db_url)
    data = recording(5)
    sha, size = hashlib.sha256(data).hexdigest(), len(data)
    # What the stale worker would write: a real result, but of another recording, so any row it
    # managed to change would differ from the rightful one.
    stale_result = json.dumps(analyze_to_dict(recording(6, 20.0), "other.c3d", {}))
    conn = await dbutil.connect(db_url)
    try:
        sid = await upload(settings, db_url, data, patient, "contested.c3d")
        # A daemon that claims the job and then freezes (killed, paused, partitioned).
        stale_owner = uuid.uuid4()
        claimed = await conn.fetchrow("select * from emgd.claim_jobs($1, 1, 0.2)", stale_owner)
        job_id, stale_token = claimed["job_id"], claimed["lease_token"]
        await asyncio.sleep(0.4)

        # 1. The lease expired and nobody took the job yet: the late commit still writes nothing.
        before = await result_rows(conn, sid)
        assert not await conn.fetchval(
            "select emgd.complete_job($1, $2, $3::jsonb, $4, $5)",
            job_id,
            stale_token,
            stale_result,
            sha,
            size,
        )
        assert await result_rows(conn, sid) == before
        assert before["parameters"] == [] and before["contractions"] == []

        # 2. A live daemon rescues the expired lease, re-claims the job and finishes it.
        async with running_daemon(settings, db_url) as d:
            rows = await wait_sessions(conn, [sid], daemon=d)
        row = rows[sid]
        assert row["status"] == "completed" and row["attempts"] == 2
        done = await result_rows(conn, sid)
        assert done["job"]["lease_owner"] is None and done["contractions"]

        # 3. Now the frozen daemon wakes up: commit, stage, fail and release all refuse its token.
        calls = [
            ("select emgd.complete_job($1, $2, $3::jsonb, $4, $5)", stale_result, sha, size),
            ("select emgd.set_stage($1, $2, 'saving', 0.9)",),
            ("select emgd.finish_job($1, $2, 'failed', 'stale', null, true)",),
            ("select emgd.release_job($1, $2)",),
        ]
        for sql, *args in calls:
            assert await conn.fetchval(sql, job_id, stale_token, *args) is False, sql
        assert await result_rows(conn, sid) == done
    finally:
        await conn.close()


async def test_a_lease_reclaimed_by_another_owner_rejects_the_first_owners_commit(db_url):
    conn = await dbutil.connect(db_url)
    try:
        patient = await dbutil.make_user(conn, "patient")
        data = recording(7)
        obj = await dbutil.upload_object(
            conn, BUCKET, f"{patient}/x.c3d", user_id=patient, data=data
        )
        sid = await conn.fetchval(
            "select id from public.sessions where object_name = $1", obj["name"]
        )
        result = json.dumps(analyze_to_dict(data, "x.c3d", {}))
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
        first = await conn.fetchrow("select * from emgd.claim_jobs($1, 1, 0.1)", uuid.uuid4())
        await asyncio.sleep(0.2)
        assert await conn.fetchval("select emgd.rescue_expired()") == 1
        second = await conn.fetchrow("select * from emgd.claim_jobs($1, 1, 30)", uuid.uuid4())
        assert second["job_id"] == first["job_id"] and second["attempts"] == 2
        before = await result_rows(conn, sid)
        assert not await conn.fetchval(
            "select emgd.complete_job($1, $2, $3::jsonb, $4, $5)",
            first["job_id"],
            first["lease_token"],
            result,
            sha,
            size,
        )
        assert await result_rows(conn, sid) == before
        assert before["job"]["lease_token"] == second["lease_token"]
        # the rightful owner's commit goes through, which shows the refusal was about the lease
        assert await conn.fetchval(
            "select emgd.complete_job($1, $2, $3::jsonb, $4, $5)",
            second["job_id"],
            second["lease_token"],
            result,
            sha,
            size,
        )
        after = await result_rows(conn, sid)
        assert after["session"]["status"] == "completed" and after["contractions"]
    finally:
        await conn.close()


async def test_requeue_brings_a_failed_session_back_and_the_running_daemon_takes_it_at_once(
    db_url, tmp_path
):
    storage = tmp_path / "s"
    settings = daemon_settings(db_url, storage, poll_interval=60.0)
    patient = await make_patient(db_url)
    data = recording(8)
    name = f"{patient}/late-bytes.c3d"
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            # Storage's row arrives, the bytes are not there: the job fails (object not found).
            await dbutil.upload_object(conn, BUCKET, name, user_id=patient, data=data)
            sid = await conn.fetchval("select id from public.sessions where object_name = $1", name)
            failed = (await wait_sessions(conn, [sid], daemon=d))[str(sid)]
            assert failed["status"] == "failed" and "object not found" in failed["last_error"]
            assert failed["error"] == "The file of this recording is no longer in storage."
            path = storage / BUCKET / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            started = time.monotonic()
            assert await conn.fetchval("select emgd.requeue($1)", sid) == 1
            row = (await wait_sessions(conn, [sid], timeout=30, daemon=d))[str(sid)]
            elapsed = time.monotonic() - started
        assert row["status"] == "completed" and row["error"] is None
        assert row["attempts"] == 1, "a requeue starts the attempts afresh"
        # ~0.2 s through the NOTIFY (seconds on a loaded machine); the poll would take 60 s
        assert elapsed < 10.0, f"requeue to result took {elapsed:.1f} s with a 60 s poll"
        assert await conn.fetchval(
            "select count(*) from public.contractions where session_id = $1", sid
        )
    finally:
        await conn.close()
