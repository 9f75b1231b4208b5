"""Local mode: what Supabase itself does in production, for one machine without it.

Beside ``daemon/sql/local_supabase.sql`` (the stand-in for Supabase's roles and schemas) and,
like it, never on the production path: a deployed daemon runs with Supabase Storage and Supabase
Auth, which store objects and create accounts themselves. ``emgd upload``, ``emgd demo``, the
tests and the benchmarks use this module to do the same on plain PostgreSQL:

``upload(settings, dsn, data, patient, filename) -> session id``
    stores the bytes with the local storage backend, then records the object the way Storage's
    service-role upsert does, so the production trigger creates the session and job;
``wait_for(dsn, name, timeout) -> row``: the session of an uploaded object once it is finished;
``create_user(conn, role, display_name)`` and ``assign(conn, therapist, patient)``: accounts as
    Supabase Auth and the app create them.

asyncpg is imported inside the functions: ``emgd --help`` stays fast.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from daemon.settings import Settings

# The row Supabase Storage itself inserts after storing the bytes.
INSERT_STORAGE_OBJECT = """
    insert into storage.objects (bucket_id, name, owner, owner_id, metadata, version, user_metadata)
    values ($1::text, $2::text, $3::uuid, $3::text, $4::jsonb, $5::text, '{}'::jsonb)
    on conflict (bucket_id, name) do update
        set metadata = excluded.metadata, version = excluded.version, updated_at = now(),
            owner = excluded.owner, owner_id = excluded.owner_id
    returning id
"""
# Local mode has no Supabase Auth: an upload for an unknown patient creates the account locally.
ENSURE_LOCAL_PATIENT = """
    with new_user as (
        insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
        values ($1::uuid, 'authenticated', 'authenticated', $1::text || '@local.invalid',
                '{"provider": "local", "role": "patient"}'::jsonb, '{}'::jsonb)
        on conflict (id) do nothing
        returning id
    )
    insert into public.users (id, role, display_name)
    select id, 'patient', 'patient ' || left(id::text, 8) from new_user
    on conflict (id) do nothing
    returning id
"""
SESSION_FOR_OBJECT = """
    select s.id, s.status, s.stage, s.error from public.sessions s
    where s.bucket_id = $1::text and s.object_name = $2::text
"""
# Users as Supabase Auth creates them, with their profile and assignment.
INSERT_AUTH_USER = """
    insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
    values ($1::uuid, 'authenticated', 'authenticated', $2::text,
            jsonb_build_object('provider', 'email', 'role', $3::text),
            jsonb_build_object('display_name', $4::text))
"""
UPSERT_PROFILE = """
    insert into public.users (id, role, display_name) values ($1::uuid, $2::text, $3::text)
    on conflict (id) do update set role = excluded.role, display_name = excluded.display_name
"""
ASSIGN_PATIENT = """
    insert into public.therapist_patients (therapist_id, patient_id, active)
    values ($1::uuid, $2::uuid, true)
    on conflict (therapist_id, patient_id) do update set active = true
"""


async def bucket(conn: Any) -> str:
    """The C3D bucket, as the database's storage trigger and policies know it."""
    from daemon.queue import JobQueue

    return await JobQueue(conn).c3d_bucket()


async def record_object(
    conn: Any, bucket_id: str, name: str, owner: uuid.UUID, metadata: dict[str, Any]
) -> str | None:
    """Insert (or, for an overwrite, update with a new version) the ``storage.objects`` row as
    Storage does; returns the session the trigger made for it, if any."""
    if await conn.fetchval(ENSURE_LOCAL_PATIENT, owner):
        print(f"created local patient {owner} (local mode has no Supabase Auth)")
    await conn.execute(
        INSERT_STORAGE_OBJECT, bucket_id, name, owner, json.dumps(metadata), str(uuid.uuid4())
    )
    row = await conn.fetchrow(SESSION_FOR_OBJECT, bucket_id, name)
    return str(row["id"]) if row else None


async def upload(
    settings: Settings, dsn: str, data: bytes, patient: uuid.UUID, filename: str
) -> str:
    """Store ``data`` as ``<patient>/<filename>`` and record the object; return the session id."""
    import asyncpg

    from daemon.storage import make_storage, object_metadata

    name = f"{patient}/{filename}"
    conn = await asyncpg.connect(dsn)
    try:
        bucket_id = await bucket(conn)
        storage = make_storage(settings)
        try:
            await storage.upload(bucket_id, name, data)
        finally:
            await storage.aclose()
        session = await record_object(
            conn, bucket_id, name, patient, object_metadata(data, "application/octet-stream")
        )
    finally:
        await conn.close()
    return session or ""


async def wait_for(dsn: str, name: str, timeout: float) -> dict[str, Any] | None:
    """The session of object ``name`` once completed or failed (or as it is after ``timeout``)."""
    import asyncio

    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        bucket_id = await bucket(conn)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            row = await conn.fetchrow(SESSION_FOR_OBJECT, bucket_id, name)
            if row and row["status"] in ("completed", "failed"):
                return dict(row)
            if asyncio.get_running_loop().time() > deadline:
                return dict(row) if row else None
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def create_user(conn: Any, role: str, display_name: str, email: str | None = None) -> str:
    """An account as Supabase Auth creates it, with its ``public.users`` profile."""
    uid = str(uuid.uuid4())
    email = email or f"{display_name.lower().replace(' ', '.')}@demo.test"
    await conn.execute(INSERT_AUTH_USER, uid, email, role, display_name)
    await conn.execute(UPSERT_PROFILE, uid, role, display_name)
    return uid


async def assign(conn: Any, therapist: str, patient: str) -> None:
    await conn.execute(ASSIGN_PATIENT, therapist, patient)
