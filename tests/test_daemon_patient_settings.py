"""A therapist's settings reach a running daemon: the change requeues exactly that patient's
sessions, the reanalysis uses the settings (recorded in ``mvc_method`` and ``processing``), a
reference session changes later analyses, and identical bytes under other options are analysed
again instead of reused."""

from __future__ import annotations

import json

import asyncpg
import pytest

from daemon.local import upload
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import daemon_settings, make_patient, running_daemon, wait_sessions


async def _methods(conn, sid) -> dict[str, str]:
    rows = await conn.fetch(
        "select name, mvc_method from public.session_parameters where session_id = $1", sid
    )
    return {r["name"]: r["mvc_method"] for r in rows}


async def test_settings_change_reanalyses_that_patients_sessions_only(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "storage")
    p, q = await make_patient(db_url), await make_patient(db_url)
    data, truth = ghostly_recording(seed=21, duration_s=20.0)
    label = truth.channels[0]
    conn = await dbutil.connect(db_url)
    try:
        therapist = await dbutil.make_user(conn, "therapist")
        await dbutil.assign(conn, therapist, p)
        async with running_daemon(settings, db_url) as d:
            # the same bytes for both patients: Q's copy reuses P's results (same options)
            sp = await upload(settings, db_url, data, p, "same.c3d")
            await wait_sessions(conn, [sp], daemon=d)
            sq = await upload(settings, db_url, data, q, "same.c3d")
            first = await wait_sessions(conn, [sp, sq], daemon=d)
            assert {r["status"] for r in first.values()} == {"completed"}
            assert set((await _methods(conn, sp)).values()) == {"session_estimate"}
            before_q = first[str(sq)]["processed_at"]

            async with dbutil.as_user(conn, therapist):
                await conn.execute(
                    "insert into public.patient_emg_settings"
                    " (patient_id, channel, mvc_value, mvc_unit, mvc_percentage)"
                    " values ($1, $2, 0.05, 'mV', 60)",
                    p,
                    label,
                )
            rows = await wait_sessions(
                conn,
                [sp],
                daemon=d,
                until=lambda r: r["processed_at"] > first[str(sp)]["processed_at"],
            )
            methods = await _methods(conn, sp)
            assert methods[label] == "patient_settings"
            assert {m for n, m in methods.items() if n != label} == {"session_estimate"}
            param = await conn.fetchrow(
                "select mvc_value, mvc_threshold, mvc_source from public.session_parameters"
                " where session_id = $1 and name = $2",
                sp,
                label,
            )
            assert abs(param["mvc_value"] - 0.05e-3) < 1e-12
            assert abs(param["mvc_threshold"] - 0.6 * 0.05e-3) < 1e-12
            options = json.loads(rows[str(sp)]["processing"])["options"]
            assert options["channels"][label]["mvc_value"] == 0.05
            assert options["channels"][label]["mvc_method"] == "patient_settings"
            assert options["mvc_percentage"] == 75.0  # the per-channel one applies to that channel

            # Q's session was not requeued and still has the estimate
            q_row = await conn.fetchrow(
                "select processed_at from public.sessions where id = $1", sq
            )
            assert q_row["processed_at"] == before_q
            assert set((await _methods(conn, sq)).values()) == {"session_estimate"}

            # identical bytes, another patient with settings of their own: analysed, not reused
            r = await make_patient(db_url)
            await conn.execute(
                "insert into public.patient_emg_settings (patient_id, mvc_value, mvc_unit)"
                " values ($1, 1.0, 'mV')",
                r,
            )
            sr = await upload(settings, db_url, data, r, "same.c3d")
            await wait_sessions(conn, [sr], daemon=d)
            assert set((await _methods(conn, sr)).values()) == {"patient_settings"}
    finally:
        await conn.close()


async def test_a_reference_session_sets_the_mvc_of_later_analyses(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "storage")
    p = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        therapist = await dbutil.make_user(conn, "therapist")
        other = await dbutil.make_user(conn, "therapist")
        await dbutil.assign(conn, therapist, p)
        async with running_daemon(settings, db_url) as d:
            ref_data, _ = ghostly_recording(seed=31, duration_s=20.0)
            later_data, _ = ghostly_recording(seed=32, duration_s=20.0)
            ref = await upload(settings, db_url, ref_data, p, "ref.c3d")
            later = await upload(settings, db_url, later_data, p, "later.c3d")
            first = await wait_sessions(conn, [ref, later], daemon=d)
            ref_mvc = {
                r["name"]: r["mvc_value"]
                for r in await conn.fetch(
                    "select name, mvc_value from public.session_parameters where session_id = $1",
                    ref,
                )
            }
            # another therapist is refused
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no session"):
                async with dbutil.as_user(conn, other):
                    await conn.fetchval("select public.set_mvc_reference($1)", ref)
            async with dbutil.as_user(conn, therapist):
                assert await conn.fetchval("select public.set_mvc_reference($1)", ref) == 1
            await wait_sessions(
                conn,
                [later],
                daemon=d,
                until=lambda r: r["processed_at"] > first[str(later)]["processed_at"],
            )
            rows = await conn.fetch(
                "select name, mvc_value, mvc_method from public.session_parameters"
                " where session_id = $1",
                later,
            )
            assert {r["mvc_method"] for r in rows} == {"reference_session"}
            for r in rows:
                assert abs(r["mvc_value"] - ref_mvc[r["name"]]) <= 1e-12 * ref_mvc[r["name"]]
            # the reference itself keeps its own estimate
            assert set((await _methods(conn, ref)).values()) == {"session_estimate"}
    finally:
        await conn.close()
