"""The therapist's side in the database: who may read and write patient settings, session inputs,
the scoring configuration, the score views and the MVC reference; the formulas of the GHOSTLY+
performance score, adherence and progress against hand-worked numbers; and settings changes
reaching the queue.

The world: patient P (active therapist T, inactive therapist I), patient Q (therapist U), admin A.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import asyncpg
import pytest

from tests import cast
from tests.cast import World, affected, attempt, seeded_world
from tests.dbutil import (
    as_user,
    assign,
    insert_row,
    make_session,
    make_user,
    parameter_row,
)

# service_role bypasses row level security: what it may do is tests/test_rls.py's matter
ACTORS = [a for a in cast.ACTORS if a != "service_role"]
READERS = {"patient", "therapist_assigned", "admin"}
WRITERS = {"therapist_assigned", "admin"}


async def _complete_session(conn, session_id, *, recorded_at=None) -> None:
    """Mark a session analysed the way a finished job leaves it (status follows the job)."""
    await conn.execute(
        "update emgd.jobs set state = 'running', lease_owner = gen_random_uuid(),"
        " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 minute'"
        " where session_id = $1",
        session_id,
    )
    await conn.execute("update emgd.jobs set state = 'succeeded' where session_id = $1", session_id)
    if recorded_at is not None:
        await conn.execute(
            "update public.sessions set recorded_at = $2 where id = $1", session_id, recorded_at
        )


@pytest.fixture(scope="module")
def world(database_factory) -> World:
    async def extras(conn: asyncpg.Connection, ids: dict[str, Any]) -> None:
        for sid in (ids["SP"], ids["SQ"]):
            await insert_row(conn, "public.session_parameters", parameter_row(sid, "CH1"))
        ids["SETTINGS"] = await conn.fetchval(
            "insert into public.patient_emg_settings (patient_id, channel, mvc_value, mvc_unit)"
            " values ($1, 'CH1', 0.4, 'V') returning id",
            ids["P"],
        )
        await conn.execute(
            "insert into public.session_inputs (session_id, rpe) values ($1, 5)", ids["SP"]
        )
        ids["CONFIG"] = await conn.fetchval(
            "insert into public.scoring_configuration (patient_id) values ($1) returning id",
            ids["P"],
        )
        # after the settings, whose insert requeued P's session
        for sid in (ids["SP"], ids["SQ"]):
            await _complete_session(conn, sid)
        ids["GLOBAL_SETTINGS"] = await conn.fetchval(
            "select id from public.patient_emg_settings where patient_id is null"
        )
        ids["GLOBAL_CONFIG"] = await conn.fetchval(
            "select id from public.scoring_configuration where patient_id is null"
        )

    return seeded_world(database_factory(), extras)


# --- the operations, each aimed at patient P's data ------------------------------------------

TABLES = {
    # table: (where clause, id key, an update that keeps the row valid)
    "patient_emg_settings": ("id = $1", "SETTINGS", "mvc_percentage = 80"),
    "session_inputs": ("session_id = $1", "SP", "rpe = 6"),
    "scoring_configuration": ("id = $1", "CONFIG", "sessions_per_week = 4"),
}


def op_select(table):
    where, key, _ = TABLES[table]

    async def op(conn, ids):
        return await conn.fetchval(f"select count(*) from public.{table} where {where}", ids[key])

    return op


def op_update(table):
    where, key, assignment = TABLES[table]

    async def op(conn, ids):
        status = await conn.execute(
            f"update public.{table} set {assignment} where {where}", ids[key]
        )
        return affected(status) == 1

    return op


def op_delete(table):
    where, key, _ = TABLES[table]

    async def op(conn, ids):
        status = await conn.execute(f"delete from public.{table} where {where}", ids[key])
        return affected(status) == 1

    return op


def op_insert(table):
    async def op(conn, ids):
        if table == "patient_emg_settings":
            await conn.execute(
                "insert into public.patient_emg_settings (patient_id, channel, mvc_value, mvc_unit)"
                " values ($1, 'CH2', 0.3, 'mV')",
                ids["P"],
            )
        elif table == "session_inputs":
            await conn.execute("delete from public.session_inputs where session_id = $1", ids["SP"])
            # the delete may be refused silently (RLS): then the insert is a conflict, not a grant
            await conn.execute(
                "insert into public.session_inputs (session_id, rpe, bfr_safe) values ($1, 3, true)"
                " on conflict (session_id) do nothing",
                ids["SP"],
            )
            return await conn.fetchval(
                "select count(*) from public.session_inputs where session_id = $1 and rpe = 3",
                ids["SP"],
            )
        else:
            await conn.execute(
                "delete from public.scoring_configuration where id = $1", ids["CONFIG"]
            )
            await conn.execute(
                "insert into public.scoring_configuration (patient_id, weight_game,"
                " weight_compliance) values ($1, 0.1, 0.4) on conflict do nothing",
                ids["P"],
            )
            return await conn.fetchval(
                "select count(*) from public.scoring_configuration"
                " where patient_id = $1 and weight_game = 0.1",
                ids["P"],
            )
        return True

    return op


OPS = {"select": op_select, "insert": op_insert, "update": op_update, "delete": op_delete}

# (table, operation) -> who may; everyone else is refused or sees nothing
ALLOWED = {
    **{(t, "select"): READERS for t in TABLES},
    **{(t, op): WRITERS for t in TABLES for op in ("insert", "update", "delete")},
}


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("table,operation", sorted(ALLOWED))
async def test_rls_matrix(world, table, operation, actor):
    allowed = await attempt(world, actor, OPS[operation](table))
    assert allowed == (actor in ALLOWED[(table, operation)]), (table, operation, actor)


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("view", ["session_scores", "patient_adherence", "patient_progress"])
async def test_views_show_a_patient_only_to_their_readers(world, view, actor):
    async def op(conn, ids):
        return await conn.fetchval(
            f"select count(*) from public.{view} where patient_id = $1", ids["P"]
        )

    assert await attempt(world, actor, op) == (actor in READERS), (view, actor)


@pytest.mark.parametrize("actor", ACTORS)
async def test_global_rows_are_read_by_every_signed_in_user_and_written_by_admins(world, actor):
    async def read(conn, ids):
        a = await conn.fetchval(
            "select count(*) from public.patient_emg_settings where id = $1", ids["GLOBAL_SETTINGS"]
        )
        b = await conn.fetchval(
            "select count(*) from public.scoring_configuration where id = $1", ids["GLOBAL_CONFIG"]
        )
        return a == 1 and b == 1

    async def write(conn, ids):
        a = await conn.execute(
            "update public.patient_emg_settings set expected_contractions = 10 where id = $1",
            ids["GLOBAL_SETTINGS"],
        )
        b = await conn.execute(
            "update public.scoring_configuration set weight_effort = 0.2, weight_game = 0.05"
            " where id = $1",
            ids["GLOBAL_CONFIG"],
        )
        return affected(a) == 1 and affected(b) == 1

    assert await attempt(world, actor, read) == (actor != "anon")
    assert await attempt(world, actor, write) == (actor == "admin")


async def test_a_patient_cannot_write_their_own_settings(world):
    async def update(conn, ids):
        status = await conn.execute(
            "update public.patient_emg_settings set mvc_value = 9 where patient_id = $1", ids["P"]
        )
        return affected(status) > 0

    async def insert(conn, ids):
        await conn.execute(
            "insert into public.patient_emg_settings (patient_id, channel) values ($1, 'X')",
            ids["P"],
        )
        return True

    assert not await attempt(world, "patient", update)
    assert not await attempt(world, "patient", insert)
    assert await attempt(world, "therapist_assigned", insert)


async def test_settings_cannot_move_to_another_patient(world):
    async def op(conn, ids):
        await conn.execute(
            "update public.patient_emg_settings set patient_id = $2 where id = $1",
            ids["SETTINGS"],
            ids["Q"],
        )
        return True

    for actor in ("admin", "therapist_assigned"):
        with pytest.raises(asyncpg.CheckViolationError, match="another patient"):
            await attempt(world, actor, op)


@pytest.mark.parametrize("actor", ACTORS)
async def test_set_mvc_reference_only_for_the_patients_therapist_or_an_admin(world, actor):
    async def op(conn, ids):
        await conn.fetchval("select public.set_mvc_reference($1)", ids["SP"])
        return await conn.fetchval(
            "select mvc_reference from public.sessions where id = $1", ids["SP"]
        )

    assert await attempt(world, actor, op) == (actor in WRITERS), actor


async def test_validation_refuses_bad_values_as_check_violations(world):
    bad = [
        "insert into public.session_inputs (session_id, rpe) values ($1, 11)",
        "insert into public.session_inputs (session_id, bfr_pressure_mmhg) values ($1, -5)",
        "insert into public.patient_emg_settings (patient_id, channel, mvc_value) values"
        " ((select patient_id from public.sessions where id = $1), 'Z', 0.3)",
        "insert into public.patient_emg_settings (patient_id, channel, mvc_percentage) values"
        " ((select patient_id from public.sessions where id = $1), 'Z', 0)",
        "insert into public.patient_emg_settings (patient_id, channel) values"
        " ((select patient_id from public.sessions where id = $1), '*')",
        "update public.scoring_configuration set weight_game = 0.5"
        " where patient_id = (select patient_id from public.sessions where id = $1)",
        "update public.scoring_configuration set weight_completion = 0.5"
        " where patient_id = (select patient_id from public.sessions where id = $1)",
    ]
    for sql in bad:

        async def op(conn, ids, sql=sql):
            await conn.execute("delete from public.session_inputs where session_id = $1", ids["SP"])
            await conn.execute(sql, ids["SP"])
            return True

        with pytest.raises(asyncpg.CheckViolationError):
            await attempt(world, "therapist_assigned", op)


# --- the formulas against hand-worked numbers ----------------------------------------------------

# The worked example of the GHOSTLY+ metric definitions: left leg 11 of 12 contractions (9 reach
# 75 % MVC, 10 last 2 s), right leg 12 of 12 (8 and 11).
LEFT = (11, 9, 10)
RIGHT = (12, 8, 11)
# compliance per leg with sub-weights 1/3: (completion + intensity + duration) / 3
C_LEFT = (11 / 12 + 9 / 11 + 10 / 11) / 3  # 0.881313...
C_RIGHT = (12 / 12 + 8 / 12 + 11 / 12) / 3  # 0.861111...
COMPLIANCE = (C_LEFT + C_RIGHT) / 2  # 0.871212...
SYMMETRY = 1 - abs(C_LEFT - C_RIGHT) / (C_LEFT + C_RIGHT)  # 0.988406...


async def _leg_session(conn, patient, name, *, recorded_at=None) -> uuid.UUID:
    sid = await make_session(conn, patient, name)
    for channel, (total, mvc_ok, dur_ok) in (("CH1", LEFT), ("CH2", RIGHT)):
        await insert_row(
            conn,
            "public.session_parameters",
            parameter_row(
                sid,
                channel,
                contractions_total=total,
                contractions_mvc_compliant=mvc_ok,
                contractions_duration_compliant=dur_ok,
                contractions_good=min(mvc_ok, dur_ok),
                expected_contractions=12,
            ),
        )
    await _complete_session(conn, sid, recorded_at=recorded_at)
    return sid


async def _scores(conn, sid) -> asyncpg.Record:
    return await conn.fetchrow("select * from public.session_scores where session_id = $1", sid)


async def test_performance_score_of_the_worked_example(db):
    patient = await make_user(db, "patient")
    sid = await _leg_session(db, patient, "worked.c3d")
    row = await _scores(db, sid)
    assert math.isclose(row["compliance"], 0.8712121212, rel_tol=1e-9)
    assert math.isclose(row["compliance"], COMPLIANCE, rel_tol=1e-12)
    assert math.isclose(row["symmetry"], 0.9884057971, rel_tol=1e-9)
    assert math.isclose(row["symmetry"], SYMMETRY, rel_tol=1e-12)
    assert row["effort"] is None and row["performance_score"] is None  # no RPE entered yet

    await db.execute(
        "insert into public.session_inputs (session_id, rpe, bfr_pressure_mmhg, bfr_safe)"
        " values ($1, 5, 120, true)",
        sid,
    )
    row = await _scores(db, sid)
    assert row["effort"] == 1.0 and row["bfr_gate"] == 1
    # 0.5 x 0.871212 + 0.25 x 0.988406 + 0.25 x 1.0 = 0.932707
    assert math.isclose(row["performance_score"], 0.9327070, abs_tol=1e-6)
    assert math.isclose(
        row["performance_score"], 0.5 * COMPLIANCE + 0.25 * SYMMETRY + 0.25, rel_tol=1e-12
    )

    # unsafe cuff pressure: the safety gate zeroes the score, the components stay
    await db.execute("update public.session_inputs set bfr_safe = false where session_id = $1", sid)
    row = await _scores(db, sid)
    assert row["bfr_gate"] == 0 and row["performance_score"] == 0.0
    assert math.isclose(row["compliance"], COMPLIANCE, rel_tol=1e-12)


@pytest.mark.parametrize(
    "rpe,effort",
    [(0, 0.2), (1, 0.2), (2, 0.6), (3, 0.8), (4, 1.0), (5, 1.0), (6, 1.0), (7, 0.8), (8, 0.6),
     (9, 0.2), (10, 0.2)],
)  # fmt: skip
async def test_effort_from_rpe(db, rpe, effort):
    assert await db.fetchval("select public.rpe_effort($1)", rpe) == effort


async def test_the_score_follows_the_patients_scoring_configuration(db):
    patient = await make_user(db, "patient")
    sid = await _leg_session(db, patient, "weights.c3d")
    await db.execute("update public.sessions set game_score = 850 where id = $1", sid)
    await db.execute(
        "insert into public.session_inputs (session_id, rpe, game_points_max) values ($1, 7, 1000)",
        sid,
    )
    # the global configuration (50/25/25/0, thirds): the game does not count
    row = await _scores(db, sid)
    assert math.isclose(row["game"], 0.85) and math.isclose(row["effort"], 0.8)
    assert math.isclose(row["performance_score"], 0.5 * COMPLIANCE + 0.25 * SYMMETRY + 0.25 * 0.8)

    # this patient's own: 40/20/20/20, and intensity weighs half of compliance
    await db.execute(
        "insert into public.scoring_configuration (patient_id, weight_compliance, weight_symmetry,"
        " weight_effort, weight_game, weight_completion, weight_intensity, weight_duration)"
        " values ($1, 0.4, 0.2, 0.2, 0.2, 0.25, 0.5, 0.25)",
        patient,
    )
    left = 0.25 * 11 / 12 + 0.5 * 9 / 11 + 0.25 * 10 / 11  # 0.865530...
    right = 0.25 * 1 + 0.5 * 8 / 12 + 0.25 * 11 / 12  # 0.812500
    compliance = (left + right) / 2
    symmetry = 1 - abs(left - right) / (left + right)
    row = await _scores(db, sid)
    assert math.isclose(row["compliance"], 0.8390151515, rel_tol=1e-9)
    assert math.isclose(row["compliance"], compliance, rel_tol=1e-12)
    assert math.isclose(row["symmetry"], symmetry, rel_tol=1e-12)
    expected = 0.4 * compliance + 0.2 * symmetry + 0.2 * 0.8 + 0.2 * 0.85
    assert math.isclose(row["performance_score"], expected, rel_tol=1e-12)
    # another patient keeps the global weights
    other = await make_user(db, "patient")
    sid2 = await _leg_session(db, other, "other.c3d")
    await db.execute("insert into public.session_inputs (session_id, rpe) values ($1, 5)", sid2)
    row2 = await _scores(db, sid2)
    assert math.isclose(row2["performance_score"], 0.5 * COMPLIANCE + 0.25 * SYMMETRY + 0.25)


async def test_an_unusable_channel_does_not_count_and_one_leg_has_no_symmetry(db):
    patient = await make_user(db, "patient")
    sid = await _leg_session(db, patient, "oneleg.c3d")
    await db.execute(
        "update public.session_parameters set usable = false, warnings = '{flat}',"
        " contractions_total = null, contractions_good = null, contractions_mvc_compliant = null,"
        " contractions_duration_compliant = null, completion_rate = null, intensity_rate = null,"
        " duration_rate = null, compliance_rate = null, time_under_tension_ms = null,"
        " mvc_value = null, mvc_threshold = null where session_id = $1 and name = 'CH2'",
        sid,
    )
    await db.execute("insert into public.session_inputs (session_id, rpe) values ($1, 5)", sid)
    row = await _scores(db, sid)
    assert row["channels"] == 1 and math.isclose(row["compliance"], C_LEFT)
    assert row["symmetry"] is None and row["performance_score"] is None


async def test_adherence_counts_completed_sessions_against_five_a_week(db):
    patient = await make_user(db, "patient")
    today = await db.fetchval("select current_date")
    # first session 13 days ago: protocol day 14, 10 sessions expected; 7 completed, 1 failed
    import datetime as dt

    for k, days_ago in enumerate([13, 12, 10, 8, 6, 3, 0]):
        when = dt.datetime.combine(today - dt.timedelta(days=days_ago), dt.time(10), dt.UTC)
        await _leg_session(db, patient, f"a{k}.c3d", recorded_at=when)
    failed = await make_session(db, patient, "failed.c3d")
    await db.execute(
        "update emgd.jobs set state = 'running', lease_owner = gen_random_uuid(),"
        " lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 minute'"
        " where session_id = $1",
        failed,
    )
    await db.execute("update emgd.jobs set state = 'failed' where session_id = $1", failed)
    row = await db.fetchrow("select * from public.patient_adherence where patient_id = $1", patient)
    assert row["protocol_day"] == 14 and row["sessions_completed"] == 7
    assert math.isclose(row["sessions_expected"], 10.0)
    assert math.isclose(row["adherence"], 0.7)
    # four a week for this patient: 8 expected, 7/8
    await db.execute(
        "insert into public.scoring_configuration (patient_id, sessions_per_week) values ($1, 4)",
        patient,
    )
    row = await db.fetchrow("select * from public.patient_adherence where patient_id = $1", patient)
    assert math.isclose(row["adherence"], 7 / 8)


async def test_adherence_is_not_judged_before_day_three(db):
    patient = await make_user(db, "patient")
    await _leg_session(db, patient, "today.c3d")
    row = await db.fetchrow("select * from public.patient_adherence where patient_id = $1", patient)
    assert row["protocol_day"] == 1 and row["adherence"] is None


async def test_progress_per_patient_channel_and_day(db):
    import datetime as dt

    patient = await make_user(db, "patient")
    day1 = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    day2 = dt.datetime(2026, 3, 3, 9, tzinfo=dt.UTC)
    await _leg_session(db, patient, "d1a.c3d", recorded_at=day1)
    await _leg_session(db, patient, "d1b.c3d", recorded_at=day1 + dt.timedelta(hours=2))
    await _leg_session(db, patient, "d2.c3d", recorded_at=day2)
    rows = await db.fetch(
        "select * from public.patient_progress where patient_id = $1"
        " order by session_date, channel",
        patient,
    )
    assert [(r["session_date"], r["channel"], r["sessions"]) for r in rows] == [
        (day1.date(), "CH1", 2),
        (day1.date(), "CH2", 2),
        (day2.date(), "CH1", 1),
        (day2.date(), "CH2", 1),
    ]
    assert rows[0]["contractions_total"] == 22 and rows[0]["contractions_mvc_compliant"] == 18
    assert rows[1]["contractions_duration_compliant"] == 22
    assert math.isclose(rows[0]["compliance"], C_LEFT) and math.isclose(
        rows[3]["compliance"], C_RIGHT
    )


# --- settings reach the queue ----------------------------------------------------------------


async def _states(conn, patient) -> list[str]:
    return [
        r["state"]
        for r in await conn.fetch(
            "select j.state from emgd.jobs j join public.sessions s on s.id = j.session_id"
            " where s.patient_id = $1 order by s.object_name",
            patient,
        )
    ]


async def test_a_settings_change_requeues_exactly_that_patients_sessions(db):
    p, q, t = [await make_user(db, r) for r in ("patient", "patient", "therapist")]
    await assign(db, t, p)
    for who in (p, q):
        for name in ("a.c3d", "b.c3d"):
            await _leg_session(db, who, name)
    async with as_user(db, t):
        await db.execute(
            "insert into public.patient_emg_settings (patient_id, channel, mvc_value, mvc_unit)"
            " values ($1, 'CH1', 0.25, 'mV')",
            p,
        )
    assert await _states(db, p) == ["pending", "pending"]
    assert await _states(db, q) == ["succeeded", "succeeded"]
    options = json.loads(
        await db.fetchval(
            "select emgd.analysis_options(id) from public.sessions where patient_id = $1 limit 1", p
        )
    )
    assert options == {
        "mvc_percentage": 75.0,
        "duration_threshold_ms": 2000.0,
        "expected_contractions": 12,
        "channels": {
            "CH1": {
                "mvc_value": 0.25,
                "mvc_unit": "mV",
                "mvc_method": "patient_settings",
                "mvc_percentage": 75.0,
                "duration_threshold_ms": 2000.0,
                "expected_contractions": 12,
            }
        },
    }
    # an update that changes nothing requeues nothing
    for (sid,) in await db.fetch("select id from public.sessions where patient_id = $1", p):
        await _complete_session(db, sid)
    await db.execute(
        "update public.patient_emg_settings set mvc_value = 0.25 where patient_id = $1", p
    )
    assert await _states(db, p) == ["succeeded", "succeeded"]


async def test_a_running_job_with_old_settings_is_taken_back(db):
    p, t = await make_user(db, "patient"), await make_user(db, "therapist")
    await assign(db, t, p)
    await make_session(db, p, "run.c3d")
    job = await db.fetchrow("select * from emgd.claim_jobs($1, 1, 30)", uuid.uuid4())
    await db.execute(
        "insert into public.patient_emg_settings (patient_id, mvc_percentage) values ($1, 60)", p
    )
    row = await db.fetchrow("select state, lease_token from emgd.jobs where id = $1", job["job_id"])
    assert row["state"] == "pending" and row["lease_token"] is None
    options = json.loads(await db.fetchval("select emgd.analysis_options($1)", job["session_id"]))
    assert options["mvc_percentage"] == 60.0 and options["channels"] == {}


async def test_the_mvc_source_order_settings_then_reference(db):
    p, t = await make_user(db, "patient"), await make_user(db, "therapist")
    await assign(db, t, p)
    ref = await _leg_session(db, p, "ref.c3d")
    later = await _leg_session(db, p, "later.c3d")
    await db.execute(
        "update public.session_parameters set mvc_value = 0.8, unit = 'mV' where session_id = $1",
        ref,
    )
    async with as_user(db, t):
        assert await db.fetchval("select public.set_mvc_reference($1)", ref) == 1
    assert await _states(db, p) == ["pending", "succeeded"]  # later requeued, the reference not
    opts = json.loads(await db.fetchval("select emgd.analysis_options($1)", later))
    assert {k: v["mvc_method"] for k, v in opts["channels"].items()} == {
        "CH1": "reference_session",
        "CH2": "reference_session",
    }
    assert (
        opts["channels"]["CH1"]["mvc_value"] == 0.8 and opts["channels"]["CH1"]["mvc_unit"] == "mV"
    )
    # the reference itself is analysed with its own estimate
    assert json.loads(await db.fetchval("select emgd.analysis_options($1)", ref))["channels"] == {}
    # a patient-wide MVC in the settings outranks the reference, on every channel
    await db.execute(
        "insert into public.patient_emg_settings (patient_id, mvc_value, mvc_unit)"
        " values ($1, 0.5, 'mV')",
        p,
    )
    opts = json.loads(await db.fetchval("select emgd.analysis_options($1)", later))
    assert opts["channels"]["CH1"]["mvc_method"] == "patient_settings"
    assert opts["channels"]["*"]["mvc_value"] == 0.5
    # a second reference replaces the first
    await _complete_session(db, later)
    async with as_user(db, t):
        await db.fetchval("select public.set_mvc_reference($1)", later)
    assert await db.fetchval(
        "select array_agg(object_name order by object_name) from public.sessions"
        " where patient_id = $1 and mvc_reference",
        p,
    ) == [f"{p}/later.c3d"]


async def test_a_session_still_pending_cannot_be_the_reference(db):
    p, admin = await make_user(db, "patient"), await make_user(db, "admin")
    sid = await make_session(db, p, "pending.c3d")
    with pytest.raises(asyncpg.CheckViolationError, match="no analysed channel"):
        async with as_user(db, admin):
            await db.fetchval("select public.set_mvc_reference($1)", sid)


async def test_a_change_to_the_global_row_requeues_every_session(db):
    p, q = await make_user(db, "patient"), await make_user(db, "patient")
    for who in (p, q):
        await _leg_session(db, who, "g.c3d")
    admin = await make_user(db, "admin")
    async with as_user(db, admin):
        await db.execute(
            "update public.patient_emg_settings set duration_threshold_ms = 1500"
            " where patient_id is null and channel is null"
        )
    assert await _states(db, p) == ["pending"] and await _states(db, q) == ["pending"]
    sid = await db.fetchval("select id from public.sessions where patient_id = $1", p)
    options = json.loads(await db.fetchval("select emgd.analysis_options($1)", sid))
    assert options["duration_threshold_ms"] == 1500.0
