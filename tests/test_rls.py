"""Row level security, as the API roles see it: every public table and the C3D bucket, for each
kind of user and each operation.

The world: patient P (active therapist T, inactive therapist I), patient Q (therapist U), admin A.
Every operation targets P's data and is rolled back, so one database serves the whole matrix.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from tests.cast import ACTOR_USER, ACTORS, World, affected, attempt, seeded_world
from tests.dbutil import (
    BUCKET,
    as_user,
    assign,
    connect,
    contraction_row,
    insert_row,
    make_bucket,
    parameter_row,
    rolled_back,
)


@pytest.fixture(scope="module")
def world(database_factory) -> World:
    async def extras(conn: asyncpg.Connection, ids: dict[str, Any]) -> None:
        ids["PARAM"] = await insert_row(conn, "public.session_parameters", parameter_row(ids["SP"]))
        ids["CONTR"] = await insert_row(conn, "public.contractions", contraction_row(ids["SP"]))
        # an auth user without a profile yet, for profile inserts
        ids["X"] = uuid.uuid4()
        await conn.execute("insert into auth.users (id, email) values ($1, 'x@x.test')", ids["X"])
        await conn.execute("delete from public.users where id = $1", ids["X"])
        await make_bucket(conn, "avatars")

    return seeded_world(database_factory(), extras)


# --- the operations, each aimed at patient P's data ------------------------------------------

TARGET = {
    "users": ("id = $1", "P"),
    "therapist_patients": ("therapist_id = $1 and patient_id = $2", ("T", "P")),
    "sessions": ("id = $1", "SP"),
    "session_parameters": ("id = $1", "PARAM"),
    "contractions": ("id = $1", "CONTR"),
}


def target_args(table: str, ids: dict[str, Any]) -> list[Any]:
    keys = TARGET[table][1]
    return [ids[k] for k in keys] if isinstance(keys, tuple) else [ids[keys]]


def op_select(table: str):
    async def op(conn, ids):
        where = TARGET[table][0]
        return await conn.fetchval(
            f"select count(*) from public.{table} where {where}", *target_args(table, ids)
        )

    return op


def op_update(table: str):
    assignment = {
        "users": "display_name = 'changed'",
        "therapist_patients": "active = false",
        "sessions": "game_name = 'changed'",
        "session_parameters": "rms = 0.5",
        "contractions": "peak_amplitude = 0.9",
    }[table]

    return _op_one_row(table, f"update public.{table} set {assignment}")


def op_delete(table: str):
    return _op_one_row(table, f"delete from public.{table}")


def _op_one_row(table: str, statement: str):
    """``statement`` aimed at the target row of ``table``: true when it changed that row."""

    async def op(conn, ids):
        where = TARGET[table][0]
        status = await conn.execute(f"{statement} where {where}", *target_args(table, ids))
        return affected(status) == 1

    return op


def op_insert(table: str):
    async def op(conn, ids):
        if table == "users":
            await conn.execute(
                "insert into public.users (id, role) values ($1, 'patient')", ids["X"]
            )
        elif table == "therapist_patients":
            await assign(conn, ids["U"], ids["P"])
        elif table == "sessions":
            await conn.execute(
                "insert into public.sessions (bucket_id, object_name, patient_id)"
                " values ($1, $2, $3)",
                BUCKET,
                f"{ids['P']}/forged.c3d",
                ids["P"],
            )
        elif table == "session_parameters":
            await insert_row(conn, "public.session_parameters", parameter_row(ids["SP"], "NEW"))
        else:
            await insert_row(conn, "public.contractions", contraction_row(ids["SP"], "CH1", 99))
        return True

    return op


OPS = {"select": op_select, "insert": op_insert, "update": op_update, "delete": op_delete}

READERS = {"patient", "therapist_assigned", "admin", "service_role"}
ADMINS = {"admin", "service_role"}
SERVICE = {"service_role"}
ALLOWED = {
    ("users", "select"): READERS,
    ("users", "insert"): ADMINS,
    ("users", "update"): ADMINS,
    ("users", "delete"): ADMINS,
    ("therapist_patients", "select"): READERS,
    ("therapist_patients", "insert"): ADMINS,
    ("therapist_patients", "update"): ADMINS,
    ("therapist_patients", "delete"): ADMINS,
    # sessions come from the storage trigger, results from the daemon (service_role)
    ("sessions", "select"): READERS,
    ("sessions", "insert"): SERVICE,
    ("sessions", "update"): SERVICE,
    ("sessions", "delete"): ADMINS,
    ("session_parameters", "select"): READERS,
    ("session_parameters", "insert"): SERVICE,
    ("session_parameters", "update"): SERVICE,
    ("session_parameters", "delete"): SERVICE,
    ("contractions", "select"): READERS,
    ("contractions", "insert"): SERVICE,
    ("contractions", "update"): SERVICE,
    ("contractions", "delete"): SERVICE,
}
CASES = [(table, op, actor) for (table, op) in ALLOWED for actor in ACTORS]


@pytest.mark.parametrize(("table", "op", "actor"), CASES)
async def test_table_matrix(world, table, op, actor):
    allowed = await attempt(world, actor, OPS[op](table))
    assert allowed == (actor in ALLOWED[(table, op)]), (
        f"{actor} {op} on {table}: expected {'allowed' if not allowed else 'denied'}"
    )


@pytest.mark.parametrize("actor", ACTORS)
async def test_patients_see_only_their_own_sessions(world, actor):
    async def visible(conn, ids):
        rows = await conn.fetch("select id from public.sessions")
        return {r["id"] for r in rows}

    ids = world.ids
    conn = await connect(world.url)
    try:
        role = {"anon": "anon", "service_role": "service_role"}.get(actor, "authenticated")
        user = ids[ACTOR_USER[actor]] if actor in ACTOR_USER else None
        try:
            async with rolled_back(conn), as_user(conn, user, role):
                seen = await visible(conn, ids)
        except asyncpg.InsufficientPrivilegeError:
            seen = set()
    finally:
        await conn.close()
    expected = {
        "patient": {ids["SP"]},
        "other_patient": {ids["SQ"]},
        "therapist_assigned": {ids["SP"]},
        "therapist_unassigned": {ids["SQ"]},
        "therapist_inactive": set(),
        "admin": {ids["SP"], ids["SQ"]},
        "anon": set(),
        "service_role": {ids["SP"], ids["SQ"]},
    }[actor]
    assert seen == expected


async def test_a_demoted_therapist_loses_access(world):
    async def demote_and_look(conn, ids):
        await conn.execute("reset role")
        await conn.execute("update public.users set role = 'patient' where id = $1", ids["T"])
        await conn.execute("set local role authenticated")
        return await conn.fetchval("select count(*) from public.sessions")

    assert await attempt(world, "therapist_assigned", demote_and_look) is False


async def test_the_queue_is_invisible_to_api_users(world):
    for actor in ["patient", "admin", "anon"]:

        async def peek(conn, ids):
            await conn.fetchval("select count(*) from emgd.jobs")
            return True

        assert await attempt(world, actor, peek) is False

    async def requeue(conn, ids):
        return await conn.fetchval("select emgd.requeue_failed()") is not None

    assert await attempt(world, "admin", requeue) is False
    assert await attempt(world, "service_role", requeue) is True


# --- storage -----------------------------------------------------------------------------------

OBJECT_SQL = (
    "insert into storage.objects (bucket_id, name, owner_id, metadata, version)"
    " values ($1, $2, auth.uid()::text, $3::jsonb, gen_random_uuid()::text)"
)


def folder_of(where: str, ids: dict[str, Any]) -> str:
    return {"own": str(ids["P"]), "bad": "not-a-uuid", "none": ""}[where]


def upload(bucket: str, folder: str):
    async def op(conn, ids):
        prefix = folder_of(folder, ids)
        name = f"{prefix}/new.c3d" if prefix else "new.c3d"
        await conn.execute(OBJECT_SQL, bucket, name, json.dumps({"size": 3}))
        return True

    return op


async def read_p_object(conn, ids):
    return await conn.fetchval(
        "select count(*) from storage.objects where bucket_id = $1 and name = $2",
        BUCKET,
        f"{ids['P']}/p.c3d",
    )


async def overwrite_p_object(conn, ids):
    status = await conn.execute(
        "update storage.objects set version = gen_random_uuid()::text"
        " where bucket_id = $1 and name = $2",
        BUCKET,
        f"{ids['P']}/p.c3d",
    )
    return affected(status) == 1


async def upsert_over_p_object(conn, ids):
    """An upload with ``upsert: true`` onto an existing name, as Storage's permission test runs
    it: INSERT ... ON CONFLICT DO UPDATE."""
    object_id = await conn.fetchval(
        OBJECT_SQL + " on conflict (bucket_id, name) do update set version = excluded.version"
        " returning id",
        BUCKET,
        f"{ids['P']}/p.c3d",
        json.dumps({"size": 3}),
    )
    return object_id is not None


def move_p_object(to: str):
    async def op(conn, ids):
        folder = {"own": ids["P"], "other": ids["Q"]}[to]
        status = await conn.execute(
            "update storage.objects set name = $3, version = gen_random_uuid()::text"
            " where bucket_id = $1 and name = $2",
            BUCKET,
            f"{ids['P']}/p.c3d",
            f"{folder}/moved.c3d",
        )
        return affected(status) == 1

    return op


async def delete_p_object(conn, ids):
    # Storage's own requests may delete rows (its scope sets storage.allow_delete_query); RLS
    # decides whose.
    await conn.execute("select set_config('storage.allow_delete_query', 'true', true)")
    status = await conn.execute(
        "delete from storage.objects where bucket_id = $1 and name = $2",
        BUCKET,
        f"{ids['P']}/p.c3d",
    )
    return affected(status) == 1


P_FOLDER = {"patient", "therapist_assigned", "admin", "service_role"}
# Therapists add recordings for their active patients but never replace one: the replacement
# would replace the patient's results.
P_OWNER = {"patient", "admin", "service_role"}
STORAGE_ALLOWED = {
    "upload_to_patient_folder": (upload(BUCKET, "own"), P_FOLDER),
    "upload_to_non_uuid_folder": (upload(BUCKET, "bad"), ADMINS),
    "upload_to_bucket_root": (upload(BUCKET, "none"), ADMINS),
    "upload_to_other_bucket": (upload("avatars", "own"), SERVICE),
    "read_patient_object": (read_p_object, P_FOLDER),
    "overwrite_patient_object": (overwrite_p_object, P_OWNER),
    "upsert_over_patient_object": (upsert_over_p_object, P_OWNER),
    "move_within_patient_folder": (move_p_object("own"), P_OWNER),
    "move_to_other_patient_folder": (move_p_object("other"), ADMINS),
    "delete_patient_object": (delete_p_object, ADMINS),
}


@pytest.mark.parametrize(("case", "actor"), [(c, a) for c in STORAGE_ALLOWED for a in ACTORS])
async def test_storage_matrix(world, case, actor):
    op, allowed_for = STORAGE_ALLOWED[case]
    allowed = await attempt(world, actor, op)
    assert allowed == (actor in allowed_for)


async def test_policy_count_is_at_least_eighteen(world):
    conn = await connect(world.url)
    try:
        public = await conn.fetchval("select count(*) from pg_policies where schemaname = 'public'")
        tables = await conn.fetch(
            "select c.relname, c.relrowsecurity from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'r'"
        )
    finally:
        await conn.close()
    assert public >= 18
    assert tables and all(t["relrowsecurity"] for t in tables), tables


# --- what errors and functions give away --------------------------------------------------------


async def refusal(world: World, actor: str, sql: str, *args: Any) -> tuple[str, str]:
    """(SQLSTATE, message) of ``sql`` run as ``actor``; fails the test when it is allowed."""
    ids = world.ids
    conn = await connect(world.url)
    try:
        async with rolled_back(conn), as_user(conn, ids[ACTOR_USER[actor]]):
            await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        return exc.sqlstate, str(exc)
    finally:
        await conn.close()
    raise AssertionError(f"{actor} was allowed: {sql}")


@pytest.mark.parametrize("actor", ["patient", "therapist_assigned", "therapist_unassigned"])
async def test_a_forged_assignment_reveals_nothing_about_other_users(world, actor):
    """Naming an admin, a therapist, a patient or nobody as the therapist gets the same answer:
    the refusal says nothing about who exists or which role they have."""
    ids = world.ids
    sql = "insert into public.therapist_patients (therapist_id, patient_id) values ($1, $2)"
    answers = {
        named: await refusal(world, actor, sql, therapist, ids["Q"])
        for named, therapist in [
            ("admin", ids["A"]),
            ("therapist", ids["U"]),
            ("patient", ids["P"]),
            ("nobody", uuid.uuid4()),
        ]
    }
    assert len(set(answers.values())) == 1, answers
    state, message = answers["admin"]
    assert state == "42501"
    assert "admin" not in message and "role" not in message and str(ids["A"]) not in message


async def test_admins_still_get_the_reason_for_a_wrong_assignment(world):
    state, message = await refusal(
        world,
        "admin",
        "insert into public.therapist_patients (therapist_id, patient_id) values ($1, $2)",
        world.ids["A"],
        world.ids["Q"],
    )
    assert state == "23514" and "must be a user with role therapist" in message


@pytest.mark.parametrize("actor", ["anon", "patient", "admin"])
async def test_api_roles_cannot_move_sequences(world, actor):
    conn = await connect(world.url)
    try:
        sequences = await conn.fetch(
            "select format('%I.%I', schemaname, sequencename) as name from pg_sequences"
            " where schemaname = 'public'"
        )
    finally:
        await conn.close()
    assert sequences
    for seq in sequences:

        async def setval(conn, ids, name=seq["name"]):
            await conn.fetchval("select setval($1::regclass, 9223372036854775000)", name)
            return True

        assert await attempt(world, actor, setval) is False, seq["name"]


# Definer functions in `public` that are meant as RPCs, each checking its caller before it reads or
# writes anything, and answering a forbidden target exactly like a missing one.
INTENDED_RPCS = {
    "set_mvc_reference(uuid)",  # admin or the patient's active therapist (test_therapist_schema)
}


async def test_no_definer_function_is_an_rpc_unless_meant_as_one(world):
    """PostgREST exposes the functions of `public`: none of them may run with its owner's rights
    for an API role (Supabase's advisor: security definer function executable), except the RPCs
    listed above on purpose."""
    conn = await connect(world.url)
    try:
        exposed = await conn.fetch(
            "select p.oid::regprocedure::text as fn, r.rolname from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace"
            " cross join (values ('anon'), ('authenticated')) as r(rolname)"
            " where n.nspname = 'public' and p.prosecdef"
            "   and has_function_privilege(r.rolname, p.oid, 'execute')"
        )
        helpers = await conn.fetchval(
            "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = 'emgd_private' and p.prosecdef"
        )
    finally:
        await conn.close()
    assert {r["fn"] for r in exposed} <= INTENDED_RPCS, exposed
    assert helpers >= 4


async def test_the_bucket_refuses_what_cannot_be_a_recording(world):
    conn = await connect(world.url)
    try:
        bucket = await conn.fetchrow(
            "select public, file_size_limit, allowed_mime_types from storage.buckets where id = $1",
            BUCKET,
        )
    finally:
        await conn.close()
    assert bucket["public"] is False
    assert 0 < bucket["file_size_limit"] <= 512 * 1024 * 1024
    assert "application/octet-stream" in bucket["allowed_mime_types"]
    # recordings, and the report pictures the daemon draws beside them (image/png only)
    others = set(bucket["allowed_mime_types"]) - {"image/png"}
    assert not any(m.startswith(("image/", "text/", "*")) for m in others)


async def test_anon_holds_nothing_in_public_now_or_for_new_tables(world):
    conn = await connect(world.url)
    try:
        held = await conn.fetch(
            "select c.relname, p.privilege from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace"
            " cross join unnest(array['select', 'insert', 'update', 'delete']) as p(privilege)"
            " where n.nspname = 'public' and c.relkind in ('r', 'v', 'm', 'p')"
            "   and has_table_privilege('anon', c.oid, p.privilege)"
        )
        async with rolled_back(conn):
            await conn.execute("create table public.emgd_future_table (id int)")
            future = await conn.fetchval(
                "select has_table_privilege('anon', 'public.emgd_future_table', 'select')"
            )
    finally:
        await conn.close()
    assert [tuple(r) for r in held] == []
    assert future is False


async def test_views_in_public_apply_the_caller_s_rls(world):
    """A view runs as its owner unless security_invoker is set: it would skip RLS."""
    conn = await connect(world.url)
    try:
        definer_views = await conn.fetch(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'public' and c.relkind = 'v'"
            "   and not coalesce('security_invoker=true' = any (c.reloptions), false)"
        )
    finally:
        await conn.close()
    assert [r["relname"] for r in definer_views] == []
