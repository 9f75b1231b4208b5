"""The daemon's SQL functions on their own: results in and out, and when results are reused."""

from __future__ import annotations

import hashlib
import json
import math
import uuid

import pytest

from emg_core import ANALYSIS_VERSION, analyze
from emg_core.synthetic import ghostly_recording
from tests import dbutil

OPTIONS: dict = {}


@pytest.fixture(scope="module")
def recording() -> tuple[bytes, dict]:
    data, _ = ghostly_recording(seed=7, duration_s=12.0)
    result = analyze(data, name="r.c3d").to_dict()
    result["processing"]["options"] = OPTIONS
    return data, result


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12)
    return a == b


async def test_session_result_gives_back_what_complete_job_stored(db, recording):
    data, result = recording
    patient = await dbutil.make_user(db, "patient")
    job = await dbutil.claimed_upload(db, patient, "a.c3d", data)
    ok = await dbutil.complete_job(db, job, result, data)
    assert ok is True
    stored = json.loads(await db.fetchval("select emgd.session_result($1)", job["session_id"]))
    assert stored["analysis_version"] == result["analysis_version"]
    assert [c["name"] for c in stored["channels"]] == [c["name"] for c in result["channels"]]
    for got, want in zip(stored["channels"], result["channels"], strict=True):
        for key, value in want.items():
            if key == "contractions":
                continue
            assert _close(got[key], value), (got["name"], key, got[key], value)
        assert len(got["contractions"]) == len(want["contractions"]) > 0
        for gk, wk in zip(got["contractions"], want["contractions"], strict=True):
            assert {k: gk[k] for k in wk} == pytest.approx(wk)


async def test_same_bytes_under_another_name_reuse_the_stored_results(db, recording):
    data, result = recording
    patient = await dbutil.make_user(db, "patient")
    sha = hashlib.sha256(data).hexdigest()
    first = await dbutil.claimed_upload(db, patient, "first.c3d", data)
    await dbutil.complete_job(db, first, result, data)
    copy = await dbutil.claimed_upload(db, patient, "copy.c3d", data)

    async def reuse(version: str, options: dict) -> bool:
        return await db.fetchval(
            "select emgd.reuse_results($1, $2, $3, $4, $5, $6::jsonb)",
            copy["job_id"],
            copy["lease_token"],
            sha,
            len(data),
            version,
            json.dumps(options),
        )

    # Another analysis version or other options must be analysed afresh: nothing is written.
    assert await reuse("0.0.0-other", OPTIONS) is False
    assert await reuse(ANALYSIS_VERSION, {"mvc_percentage": 60}) is False
    assert (
        await db.fetchval(
            "select count(*) from public.session_parameters where session_id = $1",
            copy["session_id"],
        )
        == 0
    )

    assert await reuse(ANALYSIS_VERSION, OPTIONS) is True
    original = json.loads(await db.fetchval("select emgd.session_result($1)", first["session_id"]))
    copied = json.loads(await db.fetchval("select emgd.session_result($1)", copy["session_id"]))
    assert copied["file"].endswith("copy.c3d")
    assert {k: v for k, v in copied.items() if k != "file"} == {
        k: v for k, v in original.items() if k != "file"
    }
    row = await db.fetchrow(
        "select s.status, s.content_sha256, j.state from public.sessions s"
        " join emgd.jobs j on j.session_id = s.id where s.id = $1",
        copy["session_id"],
    )
    assert tuple(row) == ("completed", sha, "succeeded")


async def test_a_requeued_session_reuses_its_own_results(db, recording):
    data, result = recording
    patient = await dbutil.make_user(db, "patient")
    sha = hashlib.sha256(data).hexdigest()
    job = await dbutil.claimed_upload(db, patient, "again.c3d", data)
    await dbutil.complete_job(db, job, result, data)
    before = json.loads(await db.fetchval("select emgd.session_result($1)", job["session_id"]))
    assert await db.fetchval("select emgd.requeue($1)", job["session_id"]) == 1
    again = await db.fetchrow("select * from emgd.claim_jobs($1, 1, 30)", uuid.uuid4())
    assert again["session_id"] == job["session_id"]
    reused = await db.fetchval(
        "select emgd.reuse_results($1, $2, $3, $4, $5, $6::jsonb)",
        again["job_id"],
        again["lease_token"],
        sha,
        len(data),
        ANALYSIS_VERSION,
        json.dumps(OPTIONS),
    )
    assert reused is True
    after = json.loads(await db.fetchval("select emgd.session_result($1)", job["session_id"]))
    assert after == before


async def test_a_claim_skips_jobs_locked_by_another_claimer_instead_of_waiting(db, db_url):
    patient = await dbutil.make_user(db, "patient")
    for name in ("first.c3d", "second.c3d"):
        await dbutil.upload_object(
            db, dbutil.BUCKET, f"{patient}/{name}", user_id=patient, data=b"x"
        )
    first, second = [
        r["id"] for r in await db.fetch("select id from emgd.jobs order by run_after, id")
    ]
    other = await dbutil.connect(db_url)
    try:
        async with other.transaction():
            # another daemon's claim, mid-transaction, holds the first job's row
            await other.execute("select 1 from emgd.jobs where id = $1 for update", first)
            # a claim that waited for that lock (no SKIP LOCKED) would hit this timeout
            await db.execute("set statement_timeout = '10s'")
            rows = await db.fetch("select * from emgd.claim_jobs($1, 2, 30)", uuid.uuid4())
    finally:
        await other.close()
    assert [r["job_id"] for r in rows] == [second]
    assert await db.fetchval("select state from emgd.jobs where id = $1", first) == "pending"
