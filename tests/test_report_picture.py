"""The report picture: every completed session gets a PNG beside its recording, recorded in
``sessions.report_path`` after the results; the recording's storage policies guard it; newer
results clear an old picture; a picture that cannot be drawn never fails the session."""

from __future__ import annotations

import asyncio
import struct
import zlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from daemon.local import upload
from daemon.report import picture_size, report_object_name
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import (
    BUCKET,
    daemon_settings,
    make_patient,
    running_daemon,
    wait_sessions,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature and the CRC."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(data[12:29]), "damaged IHDR"
    return struct.unpack(">II", data[16:24])


async def _report_paths(conn, ids) -> dict[str, str | None]:
    rows = await conn.fetch(
        "select id, report_path from public.sessions where id = any($1::uuid[])", list(ids)
    )
    return {str(r["id"]): r["report_path"] for r in rows}


async def test_every_completed_session_gets_its_picture(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "storage", concurrency=2)
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            ids = []
            for seed in (41, 42):
                data, _ = ghostly_recording(seed=seed, duration_s=25.0)
                ids.append(await upload(settings, db_url, data, patient, f"rec-{seed}.c3d"))
            # the same bytes again: results copied, and a picture of its own all the same
            ids.append(await upload(settings, db_url, data, patient, "copy.c3d"))
            rows = await wait_sessions(
                conn, ids, daemon=d, until=lambda r: r["report_path"] is not None, timeout=60
            )
        for sid, row in rows.items():
            assert row["status"] == "completed"
            assert row["report_path"] == report_object_name(row["object_name"], sid)
            assert row["report_path"] == f"{patient}/reports/{sid}.png"
            png = (tmp_path / "storage" / BUCKET / row["report_path"]).read_bytes()
            channels = await conn.fetchval(
                "select count(*) from public.session_parameters where session_id = $1", sid
            )
            assert png_size(png) == picture_size(channels) == (1400, 90 + 300 * channels)
    finally:
        await conn.close()


async def test_the_picture_is_guarded_like_the_recording(db):
    """Storage records the daemon's upload as an object under the patient's folder: the
    patient and their active therapist may download it, another patient, an inactive therapist
    and anon may not, and no API user may write into a reports folder."""
    p, q = await dbutil.make_user(db, "patient"), await dbutil.make_user(db, "patient")
    t, inactive = await dbutil.make_user(db, "therapist"), await dbutil.make_user(db, "therapist")
    admin = await dbutil.make_user(db, "admin")
    await dbutil.assign(db, t, p)
    await dbutil.assign(db, inactive, p, active=False)
    sid = await dbutil.make_session(db, p, "rec.c3d")
    path = report_object_name(f"{p}/rec.c3d", str(sid))
    await dbutil.upload_object(
        db, BUCKET, path, role="service_role", data=PNG_SIGNATURE, mimetype="image/png"
    )

    async def can_read(user, role="authenticated") -> bool:
        async with dbutil.as_user(db, user, role):
            n = await db.fetchval(
                "select count(*) from storage.objects where bucket_id = $1 and name = $2",
                BUCKET,
                path,
            )
        return n == 1

    assert await can_read(p) and await can_read(t) and await can_read(admin)
    assert not await can_read(q) and not await can_read(inactive)
    assert not await can_read(None, "anon")
    # a forged picture: refused for the patient and the therapist (they may add recordings)
    for user in (p, t):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await dbutil.upload_object(
                db, BUCKET, f"{p}/reports/forged.png", user_id=user, data=b"x",
                mimetype="image/png",
            )  # fmt: skip
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await dbutil.upload_object(
                db, BUCKET, path, user_id=user, data=b"x", mimetype="image/png", upsert=True
            )
    # a recording in the same folder is still the patient's to add
    await dbutil.upload_object(db, BUCKET, f"{p}/second.c3d", user_id=p, data=b"c3d")


async def test_newer_results_clear_the_old_picture_and_a_stale_one_is_not_recorded(db):
    p = await dbutil.make_user(db, "patient")
    sid = await dbutil.make_session(db, p, "rec.c3d")
    await db.execute(
        "update emgd.jobs set state = 'running', lease_owner = gen_random_uuid(),"
        " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 minute'"
        " where session_id = $1",
        sid,
    )
    await db.execute("update emgd.jobs set state = 'succeeded' where session_id = $1", sid)
    first = await db.fetchval(
        "update public.sessions set processed_at = now() - interval '1 minute'"
        " where id = $1 returning processed_at",
        sid,
    )
    path = f"{p}/reports/{sid}.png"
    ok = await db.fetchval("select emgd.set_report_path($1, $2, $3)", sid, path, first)
    assert ok is True
    assert await db.fetchval("select report_path from public.sessions where id = $1", sid) == path
    # new results: the picture of the old ones goes
    await db.execute("update public.sessions set processed_at = now() where id = $1", sid)
    assert await db.fetchval("select report_path from public.sessions where id = $1", sid) is None
    # a picture drawn from the older results arrives late: not recorded
    assert await db.fetchval("select emgd.set_report_path($1, $2, $3)", sid, path, first) is False
    # nor one outside the patient's folder
    other = f"{await dbutil.make_user(db, 'patient')}/reports/{sid}.png"
    now = await db.fetchval("select processed_at from public.sessions where id = $1", sid)
    assert await db.fetchval("select emgd.set_report_path($1, $2, $3)", sid, other, now) is False
    with pytest.raises(asyncpg.CheckViolationError):
        await db.fetchval("select emgd.set_report_path($1, $2, $3)", sid, f"{p}/x.txt", now)


class _NoPictures:
    """A real analysis (in a thread) whose picture always fails."""

    def __init__(self) -> None:
        self.renders = 0

    async def analyse(self, data: Any, *, name: str, options: dict[str, Any]) -> dict[str, Any]:
        from daemon.isolation import analyze_to_dict

        if not isinstance(data, bytes):  # the daemon hands over the downloaded file's path
            data = Path(data).read_bytes()
        return await asyncio.to_thread(analyze_to_dict, data, name, options)

    async def render_report(self, data: bytes, **kwargs: Any) -> bytes:
        self.renders += 1
        raise RuntimeError("the drawing failed")


async def test_a_failed_picture_never_fails_the_session(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "storage")
    patient = await make_patient(db_url)
    analyser = _NoPictures()
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url, analyser=analyser) as d:
            data, _ = ghostly_recording(seed=43, duration_s=15.0)
            sid = await upload(settings, db_url, data, patient, "rec.c3d")
            rows = await wait_sessions(conn, [sid], daemon=d)
        row = rows[str(sid)]
        assert (row["status"], row["error"], row["report_path"]) == ("completed", None, None)
        assert analyser.renders == 1
        assert not any(Path(tmp_path / "storage").rglob("*.png"))
    finally:
        await conn.close()


def test_contractions_are_coloured_by_what_they_reached():
    from daemon.report import KINDS, contraction_kind

    kinds = [
        contraction_kind({"meets_mvc": m, "meets_duration": d})
        for m, d in ((True, True), (True, False), (False, True), (False, False))
    ]
    assert kinds == ["good", "mvc_only", "duration_only", "neither"]
    assert len({colour for colour, _label in KINDS.values()}) == 4


def test_the_picture_has_its_size_whatever_the_channels_say():
    """One, two and three channels, an unusable one with a long reason among them: the size
    depends on the channel count only."""
    import numpy as np

    from daemon.report import render_png
    from emg_core import analyze
    from emg_core.synthetic import c3d_bytes, ghostly_signals

    _labels, data, _truth = ghostly_signals(seed=44, duration_s=12.0)
    for n in (1, 2, 3):
        rows = [data[i % data.shape[0]] for i in range(n)]
        names = tuple(f"CH{i + 1} Raw" for i in range(n))
        content = c3d_bytes(names, np.stack(rows), 990.0)
        result = analyze(content, name="sized.c3d").to_dict()
        result["channels"][0]["usable"] = False
        result["channels"][0]["warnings"] = ["not analysed: " + "a very long reason " * 30]
        png = render_png(content, "sized.c3d", {}, result)
        assert png_size(png) == picture_size(n) == (1400, 90 + 300 * n)
