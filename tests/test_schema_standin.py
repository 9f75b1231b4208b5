"""The local Supabase stand-in behaves as Supabase does where emgd depends on it."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from tests.dbutil import BUCKET, as_anon, as_user, upload_object


async def test_auth_functions_read_the_jwt_claims_like_supabase(db):
    uid = uuid.uuid4()
    async with as_user(db, uid):
        assert await db.fetchval("select auth.uid()") == uid
        assert await db.fetchval("select auth.role()") == "authenticated"
        assert (await db.fetchval("select auth.jwt() ->> 'sub'")) == str(uid)
        assert await db.fetchval("select current_user") == "authenticated"
    # PostgREST >= 9 sets only request.jwt.claims; the functions must not need the legacy key
    async with db.transaction():
        await db.execute(
            "select set_config('request.jwt.claims', $1, true)",
            json.dumps({"sub": str(uid), "role": "authenticated"}),
        )
        assert await db.fetchval("select auth.uid()") == uid
        assert await db.fetchval("select auth.role()") == "authenticated"
    async with as_anon(db):
        assert await db.fetchval("select auth.uid()") is None
        assert await db.fetchval("select auth.role()") == "anon"
    # outside any request: no user, and no error
    assert await db.fetchval("select auth.uid()") is None
    assert await db.fetchval("select auth.jwt()") is None


async def test_roles_are_supabase_s(db):
    rows = {
        r["rolname"]: r
        for r in await db.fetch(
            "select rolname, rolcanlogin, rolbypassrls from pg_roles"
            " where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')"
        )
    }
    assert set(rows) == {"anon", "authenticated", "service_role", "authenticator"}
    assert not rows["anon"]["rolcanlogin"] and not rows["authenticated"]["rolcanlogin"]
    assert rows["service_role"]["rolbypassrls"] and not rows["authenticated"]["rolbypassrls"]


async def test_storage_objects_columns_and_helpers(db):
    obj = await upload_object(db, BUCKET, "a/b/Rec.Final.C3D", role="service_role", data=b"abc")
    row = await db.fetchrow("select * from storage.objects where id = $1", obj["id"])
    assert row["path_tokens"] == ["a", "b", "Rec.Final.C3D"]
    assert row["version"] == obj["version"]
    assert json.loads(row["metadata"])["size"] == 3
    columns = set(row.keys())
    assert {"owner", "owner_id", "last_accessed_at", "user_metadata", "created_at"} <= columns
    helpers = await db.fetchrow(
        "select storage.foldername($1) as f, storage.filename($1) as n, storage.extension($1) as e",
        row["name"],
    )
    assert tuple(helpers) == (["a", "b"], "Rec.Final.C3D", "C3D")
    assert await db.fetchval(
        "select relrowsecurity from pg_class where oid = 'storage.objects'::regclass"
    )


async def test_one_object_per_bucket_and_name(db):
    await upload_object(db, BUCKET, "x/one.c3d", role="service_role")
    with pytest.raises(asyncpg.UniqueViolationError):
        await upload_object(db, BUCKET, "x/one.c3d", role="service_role")


async def test_sql_deletes_of_storage_rows_are_refused_as_supabase_refuses_them(db):
    """Storage migration 0055: only the Storage API (whose requests set
    storage.allow_delete_query) may delete objects or buckets."""
    await upload_object(db, BUCKET, "x/gone.c3d", role="service_role")
    for table in ("storage.objects", "storage.buckets"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="Use the Storage API"):
            await db.execute(f"delete from {table} where false")
    async with db.transaction():
        await db.execute("select set_config('storage.allow_delete_query', 'true', true)")
        assert await db.execute("delete from storage.objects where name = 'x/gone.c3d'") == (
            "DELETE 1"
        )


async def test_storage_tables_have_the_current_release_s_columns(db):
    bucket = await db.fetchrow(
        "select type::text, versioning_status from storage.buckets where id = $1", BUCKET
    )
    assert tuple(bucket) == ("STANDARD", "DISABLED")
    obj = await upload_object(db, BUCKET, "x/cols.c3d", role="service_role")
    row = await db.fetchrow(
        "select archived_at, is_delete_marker, is_versioned from storage.objects where id = $1",
        obj["id"],
    )
    assert tuple(row) == (None, False, False)
    # versioning is not switched on anywhere yet ("dark" in the release)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "update storage.buckets set versioning_status = 'ENABLED' where id = $1", BUCKET
        )
