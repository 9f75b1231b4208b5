"""Validation triggers reject bad rows with messages that say what is wrong."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.dbutil import (
    assign,
    contraction_row,
    insert_row,
    make_session,
    make_user,
    parameter_row,
)

NAN = float("nan")
INF = float("inf")


@pytest.fixture
async def session_id(db):
    patient = await make_user(db, "patient")
    return await make_session(db, patient)


async def test_valid_rows_are_accepted(db, session_id):
    await insert_row(db, "public.session_parameters", parameter_row(session_id))
    await insert_row(db, "public.contractions", contraction_row(session_id))
    # a tiny floating point difference in duration is tolerated
    await insert_row(
        db,
        "public.contractions",
        contraction_row(session_id, index=1, start_ms=0.1, end_ms=0.3, duration_ms=0.2),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"end_ms": 1000.0}, "end_ms (1000) must be greater than start_ms (1000)"),
        ({"end_ms": 900.0, "duration_ms": -100.0}, "end_ms (900) must be greater than start_ms"),
        ({"duration_ms": 2400.0}, "duration_ms (2400) must equal end_ms - start_ms (2500)"),
        ({"duration_ms": 2500.01}, "duration_ms (2500.01) must equal end_ms - start_ms"),
        ({"peak_amplitude": -0.1}, "peak_amplitude must be >= 0 and finite, got -0.1"),
        ({"mean_amplitude": -1.0}, "mean_amplitude must be >= 0"),
        ({"mean_amplitude": INF}, "mean_amplitude must be >= 0 and finite, got Infinity"),
        ({"start_ms": -5.0, "end_ms": 10.0, "duration_ms": 15.0}, "start_ms must be >= 0"),
        ({"contraction_index": -1}, "contraction_index must be >= 0, got -1"),
        ({"mpf_hz": -3.0}, "mpf_hz must be >= 0"),
        ({"mdf_hz": NAN}, "mdf_hz must be >= 0 and finite, got NaN"),
    ],
)
async def test_bad_contractions_are_rejected(db, session_id, overrides, message):
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await insert_row(db, "public.contractions", contraction_row(session_id, **overrides))
    assert str(err.value).startswith("contractions: ")
    assert message in str(err.value)


RATES = [
    "completion_rate",
    "intensity_rate",
    "duration_rate",
    "compliance_rate",
    "signal_quality",
    "activation_agreement",
]


@pytest.mark.parametrize("column", RATES)
@pytest.mark.parametrize("value", [-0.01, 1.01, NAN, INF])
async def test_rates_outside_zero_one_are_rejected(db, session_id, column, value):
    with pytest.raises(asyncpg.CheckViolationError, match=f"{column} must be between 0 and 1"):
        await insert_row(
            db, "public.session_parameters", parameter_row(session_id, **{column: value})
        )


@pytest.mark.parametrize("column", RATES)
async def test_rates_at_the_bounds_are_accepted(db, session_id, column):
    await insert_row(
        db, "public.session_parameters", parameter_row(session_id, "A", **{column: 0.0})
    )
    await insert_row(
        db, "public.session_parameters", parameter_row(session_id, "B", **{column: 1.0})
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sampling_rate": 0.0}, "sampling_rate must be > 0, got 0"),
        ({"rms": -1.0}, "rms must be >= 0"),
        ({"mav": NAN}, "mav must be >= 0 and finite"),
        ({"mvc_value": -0.2}, "mvc_value must be >= 0"),
        ({"mvc_threshold": -0.2}, "mvc_threshold must be >= 0"),
        ({"contractions_total": -1, "contractions_good": 0}, "contractions_total must be >= 0"),
        ({"contractions_good": 11}, "cannot exceed contractions_total (10)"),
        ({"mpf_hz": -1.0}, "mpf_hz must be >= 0"),
        ({"fi_nsm5": INF}, "fi_nsm5 must be a finite number"),
        ({"mdf_slope_pct_per_s": NAN}, "mdf_slope_pct_per_s must be a finite number"),
        ({"time_under_tension_ms": -1.0}, "time_under_tension_ms must be >= 0"),
    ],
)
async def test_bad_parameters_are_rejected(db, session_id, overrides, message):
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await insert_row(db, "public.session_parameters", parameter_row(session_id, **overrides))
    assert str(err.value).startswith("session_parameters: ")
    assert message in str(err.value)


async def test_optional_spectral_fields_may_be_null(db, session_id):
    nulls = dict.fromkeys(
        ["mpf_hz", "mdf_hz", "fi_nsm5", "fi_nsm5_relative", "mpf_slope_hz_per_s"], None
    )
    await insert_row(db, "public.session_parameters", parameter_row(session_id, **nulls))


async def test_updates_are_validated_too(db, session_id):
    cid = await insert_row(db, "public.contractions", contraction_row(session_id))
    with pytest.raises(asyncpg.CheckViolationError, match="must equal end_ms - start_ms"):
        await db.execute("update public.contractions set end_ms = 9000 where id = $1", cid)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            "status = 'done'",
            "status must be one of pending, processing, completed, failed; got 'done'",
        ),
        ("stage = 'thinking'", "stage must be one of queued, downloading, analysing"),
        ("progress = 1.5", "progress must be between 0 and 1, got 1.5"),
        ("progress = -0.1", "progress must be between 0 and 1"),
        ("overall_compliance = 2", "overall_compliance must be between 0 and 1, got 2"),
        ("symmetry = -1", "symmetry must be between 0 and 1"),
        ("file_size = -1", "file_size must be >= 0, got -1"),
        ("duration_s = -3", "duration_s must be >= 0"),
        ("content_sha256 = 'abc'", "content_sha256 must be 64 lowercase hex digits, got 'abc'"),
    ],
)
async def test_bad_session_values_are_rejected(db, session_id, assignment, message):
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await db.execute(f"update public.sessions set {assignment} where id = $1", session_id)
    assert str(err.value).startswith("sessions: ")
    assert message in str(err.value)


async def test_user_role_values(db):
    with pytest.raises(
        asyncpg.CheckViolationError,
        match="role must be one of patient, therapist, admin; got 'doctor'",
    ):
        await make_user(db, "doctor")
    user = await make_user(db, "therapist")
    with pytest.raises(asyncpg.CheckViolationError, match="got 'root'"):
        await db.execute("update public.users set role = 'root' where id = $1", user)


async def test_assignments_need_a_therapist_and_a_patient(db):
    therapist = await make_user(db, "therapist")
    patient = await make_user(db, "patient")
    admin = await make_user(db, "admin")
    await assign(db, therapist, patient)
    with pytest.raises(
        asyncpg.CheckViolationError,
        match=r"therapist_id \S+ must be a user with role therapist, not admin",
    ):
        await assign(db, admin, patient)
    with pytest.raises(
        asyncpg.CheckViolationError,
        match=r"patient_id \S+ must be a user with role patient, not therapist",
    ):
        await assign(db, therapist, await make_user(db, "therapist"))
    with pytest.raises(asyncpg.CheckViolationError, match="cannot be their own therapist"):
        await assign(db, therapist, therapist)


async def test_new_auth_user_gets_a_profile_with_a_role_only_the_service_can_grant(db):
    from uuid import uuid4

    granted, self_declared = uuid4(), uuid4()
    await db.execute(
        "insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data) values"
        ' ($1, \'a@x.test\', \'{"role": "therapist"}\', \'{"display_name": "Dr A"}\'),'
        " ($2, 'b@x.test', '{}', '{\"role\": \"admin\"}')",
        granted,
        self_declared,
    )
    rows = {r["id"]: r for r in await db.fetch("select * from public.users")}
    assert (rows[granted]["role"], rows[granted]["display_name"]) == ("therapist", "Dr A")
    assert (rows[self_declared]["role"], rows[self_declared]["display_name"]) == (
        "patient",
        "b@x.test",
    )
    # deleting the auth user deletes the profile
    await db.execute("delete from auth.users where id = $1", granted)
    assert await db.fetchval("select count(*) from public.users where id = $1", granted) == 0


@pytest.mark.parametrize(
    "table", ["users", "therapist_patients", "sessions", "session_parameters", "contractions"]
)
async def test_updated_at_moves_on_every_update(db, session_id, table):
    await insert_row(db, "public.session_parameters", parameter_row(session_id))
    await insert_row(db, "public.contractions", contraction_row(session_id))
    therapist = await make_user(db, "therapist")
    patient = await db.fetchval("select patient_id from public.sessions where id = $1", session_id)
    await assign(db, therapist, patient)
    before = await db.fetchval(f"select max(updated_at) from public.{table}")
    await asyncio.sleep(0.01)
    await db.execute(f"update public.{table} set created_at = created_at")
    after = await db.fetchval(f"select min(updated_at) from public.{table}")
    assert after > before


async def test_updated_at_moves_on_jobs_and_config(db, session_id):
    for table in ("emgd.jobs", "emgd.config"):
        before = await db.fetchval(f"select max(updated_at) from {table}")
        await asyncio.sleep(0.01)
        await db.execute(f"update {table} set created_at = created_at")
        assert await db.fetchval(f"select min(updated_at) from {table}") > before
