"""Deletes and moves keep results honest: through Storage's own API path (a delete or a move as
the requesting user, RLS deciding), a session and its results follow their object in the same
transaction, and a session a person deleted stays deleted until its object gets a new version."""

from __future__ import annotations

import asyncpg
import pytest

from tests.dbutil import (
    BUCKET,
    as_storage_api,
    as_user,
    contraction_row,
    delete_object,
    insert_row,
    make_user,
    move_object,
    parameter_row,
    upload_object,
)


async def completed_session(db: asyncpg.Connection, patient, name: str = "rec.c3d"):
    """An uploaded recording whose session has results, as after a successful analysis."""
    obj = await upload_object(db, BUCKET, f"{patient}/{name}", user_id=patient, data=b"c3d")
    session = await db.fetchval(
        "select id from public.sessions where bucket_id = $1 and object_name = $2",
        BUCKET,
        obj["name"],
    )
    await insert_row(db, "public.session_parameters", parameter_row(session))
    await insert_row(db, "public.contractions", contraction_row(session))
    return obj, session


async def rows_of(db: asyncpg.Connection, session) -> dict[str, int]:
    return {
        table: await db.fetchval(f"select count(*) from {table} where {col} = $1", session)
        for table, col in [
            ("public.sessions", "id"),
            ("public.session_parameters", "session_id"),
            ("public.contractions", "session_id"),
            ("emgd.jobs", "session_id"),
        ]
    }


NONE = {
    "public.sessions": 0,
    "public.session_parameters": 0,
    "public.contractions": 0,
    "emgd.jobs": 0,
}


async def test_deleting_an_object_takes_its_session_and_results_in_the_same_transaction(db):
    patient = await make_user(db, "patient")
    admin = await make_user(db, "admin")
    obj, session = await completed_session(db, patient)
    assert (await rows_of(db, session))["public.contractions"] == 1

    # the same transaction: if the delete is rolled back, so is the session's
    with pytest.raises(RuntimeError):
        async with as_storage_api(db, admin):
            await db.execute(
                "delete from storage.objects where bucket_id = $1 and name = $2",
                BUCKET,
                obj["name"],
            )
            await db.execute("reset role")
            assert await rows_of(db, session) == NONE
            raise RuntimeError("roll back")
    assert (await rows_of(db, session))["public.sessions"] == 1

    assert await delete_object(db, BUCKET, obj["name"], user_id=admin)
    assert await rows_of(db, session) == NONE
    assert await db.fetchval("select emgd.catch_up()") == 0
    assert await rows_of(db, session) == NONE


@pytest.mark.parametrize("who", ["patient", "therapist"])
async def test_a_delete_refused_by_rls_leaves_the_session(db, who):
    patient = await make_user(db, "patient")
    therapist = await make_user(db, "therapist")
    await db.execute(
        "insert into public.therapist_patients (therapist_id, patient_id) values ($1, $2)",
        therapist,
        patient,
    )
    obj, session = await completed_session(db, patient)
    actor = {"patient": patient, "therapist": therapist}[who]
    assert not await delete_object(db, BUCKET, obj["name"], user_id=actor)
    assert (await rows_of(db, session))["public.contractions"] == 1


async def test_moving_to_another_patient_leaves_nothing_behind_for_the_first(db):
    first = await make_user(db, "patient")
    second = await make_user(db, "patient")
    admin = await make_user(db, "admin")
    obj, session = await completed_session(db, first)

    await move_object(db, BUCKET, obj["name"], f"{second}/rec.c3d", user_id=admin)

    assert await rows_of(db, session) == NONE
    moved = await db.fetchrow(
        "select s.patient_id, s.status, j.state from public.sessions s"
        " join emgd.jobs j on j.session_id = s.id where s.object_name = $1",
        f"{second}/rec.c3d",
    )
    assert tuple(moved) == (second, "pending", "pending")
    async with as_user(db, first):
        assert await db.fetchval("select count(*) from public.sessions") == 0
    async with as_user(db, second):
        assert await db.fetchval("select count(*) from public.sessions") == 1


async def test_a_patient_renaming_their_own_recording_gets_one_session_under_the_new_name(db):
    patient = await make_user(db, "patient")
    obj, _ = await completed_session(db, patient)
    await move_object(db, BUCKET, obj["name"], f"{patient}/renamed.c3d", user_id=patient)
    names = [r["object_name"] for r in await db.fetch("select object_name from public.sessions")]
    assert names == [f"{patient}/renamed.c3d"]


async def test_a_patient_cannot_move_a_recording_into_another_patient_s_folder(db):
    patient = await make_user(db, "patient")
    other = await make_user(db, "patient")
    obj, session = await completed_session(db, patient)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await move_object(db, BUCKET, obj["name"], f"{other}/stolen.c3d", user_id=patient)
    assert (await rows_of(db, session))["public.contractions"] == 1


async def test_a_session_an_admin_deleted_stays_deleted_until_a_new_version(db):
    patient = await make_user(db, "patient")
    admin = await make_user(db, "admin")
    obj, session = await completed_session(db, patient)

    async with as_user(db, admin):
        assert await db.execute("delete from public.sessions where id = $1", session) == (
            "DELETE 1"
        )
    assert await db.fetchval("select emgd.catch_up()") == 0
    assert await db.fetchval("select count(*) from public.sessions") == 0
    # the same version delivered again (a replayed trigger) does not bring it back either
    assert (
        await db.fetchval(
            "select emgd.enqueue_object($1, $2, $3, $4, 3)",
            BUCKET,
            obj["name"],
            obj["id"],
            obj["version"],
        )
        is None
    )
    assert await db.fetchval("select count(*) from public.sessions") == 0

    # a new version of the object is a new recording: it gets a session again
    await upload_object(db, BUCKET, obj["name"], user_id=patient, data=b"v2", upsert=True)
    row = await db.fetchrow(
        "select status from public.sessions where object_name = $1", obj["name"]
    )
    assert row is not None and row["status"] == "pending"
    assert await db.fetchval("select count(*) from emgd.dismissed_objects") == 0


async def test_a_deleted_then_reuploaded_object_is_analysed_again(db):
    patient = await make_user(db, "patient")
    admin = await make_user(db, "admin")
    obj, session = await completed_session(db, patient)
    async with as_user(db, admin):
        await db.execute("delete from public.sessions where id = $1", session)
    assert await delete_object(db, BUCKET, obj["name"], user_id=admin)
    assert await db.fetchval("select count(*) from emgd.dismissed_objects") == 0
    await upload_object(db, BUCKET, obj["name"], user_id=patient, data=b"again")
    assert await db.fetchval("select count(*) from public.sessions") == 1


async def test_a_job_running_when_its_object_is_deleted_writes_nothing(db):
    patient = await make_user(db, "patient")
    admin = await make_user(db, "admin")
    obj = await upload_object(db, BUCKET, f"{patient}/busy.c3d", user_id=patient, data=b"c3d")
    job = await db.fetchrow(
        "select * from emgd.claim_jobs(gen_random_uuid(), 1, 30)",
    )
    assert job is not None
    assert await delete_object(db, BUCKET, obj["name"], user_id=admin)
    assert (
        await db.fetchval(
            "select emgd.set_stage($1, $2, 'saving')", job["job_id"], job["lease_token"]
        )
        is False
    )
    assert await db.fetchval("select count(*) from public.sessions") == 0
