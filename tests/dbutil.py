"""Helpers for tests that talk to a real PostgreSQL: URLs, databases, acting as a Supabase user.

The database fixtures in conftest.py are built from these; tests import the rest directly
(``from tests.dbutil import as_user, make_user, upload_object``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

T = TypeVar("T")

BUCKET = "c3d-examples"


# --- URLs and databases ------------------------------------------------------------------------


def with_database(url: str, dbname: str) -> str:
    """The same server URL pointing at another database (works for socket URLs too)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def random_name(prefix: str) -> str:
    """Unique per call, so several test sessions can share one server."""
    return f"{prefix}_{secrets.token_hex(6)}"


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from synchronous fixture code, even if an event loop is running here."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


async def connect(url: str, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(url, **kwargs)


async def create_database(
    server_url: str, *, template: str | None = None, prefix: str = "emgd_t"
) -> str:
    """Create a uniquely named database (optionally from a template); return its URL."""
    name = random_name(prefix)
    conn = await connect(server_url)
    try:
        if template:
            await conn.execute(f'create database "{name}" template "{template}"')
        else:
            await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop a test database, terminating whatever still holds a connection to it."""
    conn = await connect(server_url)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
    finally:
        await conn.close()


# --- acting as a Supabase user ----------------------------------------------------------------


def claims_for(user_id: uuid.UUID | str | None, role: str) -> dict[str, Any]:
    claims: dict[str, Any] = {"role": role, "aud": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    return claims


@contextlib.asynccontextmanager
async def as_user(
    conn: asyncpg.Connection, user_id: uuid.UUID | str | None, role: str = "authenticated"
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction in which ``conn`` acts as PostgREST makes a request act: ``SET LOCAL ROLE``
    plus the JWT claims in ``request.jwt.claims`` (and the legacy ``request.jwt.claim.sub``).

    The transaction commits when the block ends normally; an exception rolls it back.
    """
    claims = claims_for(user_id, role)
    async with conn.transaction():
        await conn.execute(
            "select set_config('role', $1, true),"
            " set_config('request.jwt.claims', $2, true),"
            " set_config('request.jwt.claim.sub', $3, true),"
            " set_config('request.jwt.claim.role', $1, true)",
            role,
            json.dumps(claims),
            "" if user_id is None else str(user_id),
        )
        yield conn


def as_anon(conn: asyncpg.Connection) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
    return as_user(conn, None, role="anon")


def as_service(
    conn: asyncpg.Connection,
) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
    return as_user(conn, None, role="service_role")


class _Rollback(Exception):
    """Raised inside a transaction block only to roll it back."""


@contextlib.asynccontextmanager
async def rolled_back(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A savepoint-free way to try something and undo it: the outer transaction is rolled back."""
    with contextlib.suppress(_Rollback):
        async with conn.transaction():
            yield conn
            raise _Rollback


# --- factories ----------------------------------------------------------------------------------


async def make_user(
    conn: asyncpg.Connection,
    role: str = "patient",
    *,
    display_name: str | None = None,
    email: str | None = None,
) -> uuid.UUID:
    """A user as Supabase Auth would create one (auth.users), with its public.users profile."""
    user_id = uuid.uuid4()
    email = email or f"{role}-{user_id.hex[:8]}@example.test"
    await conn.execute(
        "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)"
        " values ($1, 'authenticated', 'authenticated', $2, $3::jsonb, $4::jsonb)",
        user_id,
        email,
        json.dumps({"provider": "email", "role": role}),
        json.dumps({"display_name": display_name or email}),
    )
    # The handle-new-user trigger normally creates the profile; upsert so the role is exact
    # whether or not it ran.
    await conn.execute(
        "insert into public.users (id, role, display_name) values ($1, $2, $3)"
        " on conflict (id) do update"
        " set role = excluded.role, display_name = excluded.display_name",
        user_id,
        role,
        display_name or email,
    )
    return user_id


async def assign(
    conn: asyncpg.Connection, therapist_id: uuid.UUID, patient_id: uuid.UUID, *, active: bool = True
) -> None:
    await conn.execute(
        "insert into public.therapist_patients (therapist_id, patient_id, active)"
        " values ($1, $2, $3)"
        " on conflict (therapist_id, patient_id) do update set active = excluded.active",
        therapist_id,
        patient_id,
        active,
    )


async def make_bucket(conn: asyncpg.Connection, bucket_id: str) -> None:
    await conn.execute(
        "insert into storage.buckets (id, name) values ($1, $1) on conflict (id) do nothing",
        bucket_id,
    )


_UPSERT_OBJECT = """
insert into storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version)
values ($1, $2, $3::uuid, $3, $4::jsonb, $5::jsonb, $6)
on conflict (bucket_id, name) do update set
    owner = excluded.owner,
    owner_id = excluded.owner_id,
    metadata = excluded.metadata,
    user_metadata = excluded.user_metadata,
    version = excluded.version,
    updated_at = now()
returning id
"""

_INSERT_OBJECT = """
insert into storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version)
values ($1, $2, $3::uuid, $3, $4::jsonb, $5::jsonb, $6)
returning id
"""


async def upload_object(
    conn: asyncpg.Connection,
    bucket: str,
    name: str,
    *,
    user_id: uuid.UUID | str | None = None,
    role: str = "authenticated",
    data: bytes = b"",
    mimetype: str = "application/octet-stream",
    upsert: bool = False,
    version: str | None = None,
    user_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record an upload the way Supabase Storage does, in its two steps.

    1. As the uploading user (unless ``role='service_role'``): the same INSERT (or upsert), in a
       transaction that is always rolled back. It only asks RLS whether the user may upload;
       a refusal raises ``asyncpg.InsufficientPrivilegeError`` and nothing is stored.
    2. As ``service_role``: the real INSERT (or, with ``upsert``, INSERT ... ON CONFLICT DO
       UPDATE, which makes an overwrite an UPDATE of ``version``), committed.

    Returns ``{"id", "version", "bucket_id", "name"}``.
    """
    version = version or str(uuid.uuid4())
    owner = None if user_id is None else str(user_id)
    metadata = {
        "eTag": f'"{hashlib.md5(data).hexdigest()}"',
        "size": len(data),
        "mimetype": mimetype,
        "cacheControl": "max-age=3600",
        "contentLength": len(data),
        "httpStatusCode": 200,
    }
    sql = _UPSERT_OBJECT if upsert else _INSERT_OBJECT
    params = (bucket, name, owner, json.dumps(metadata), json.dumps(user_metadata or {}), version)
    if role != "service_role":
        with contextlib.suppress(_Rollback):
            async with as_user(conn, user_id, role):
                await conn.fetchval(sql, *params)
                raise _Rollback
    async with as_service(conn):
        object_id = await conn.fetchval(sql, *params)
    return {"id": object_id, "version": version, "bucket_id": bucket, "name": name}


@contextlib.asynccontextmanager
async def as_storage_api(
    conn: asyncpg.Connection, user_id: uuid.UUID | str | None, role: str = "authenticated"
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction as Supabase Storage runs one for a request: ``as_user`` plus the setting its
    requests carry that lets rows leave storage tables (``storage.allow_delete_query``)."""
    async with as_user(conn, user_id, role):
        await conn.execute("select set_config('storage.allow_delete_query', 'true', true)")
        yield conn


async def delete_object(
    conn: asyncpg.Connection,
    bucket: str,
    name: str,
    *,
    user_id: uuid.UUID | str | None = None,
    role: str = "authenticated",
) -> bool:
    """Delete an object the way Storage's remove API does: one DELETE as the requesting user
    (RLS decides), in a Storage request transaction. True when a row went."""
    async with as_storage_api(conn, user_id, role):
        gone = await conn.fetch(
            "delete from storage.objects where bucket_id = $1 and name = any($2::text[])"
            " returning id",
            bucket,
            [name],
        )
    return bool(gone)


async def move_object(
    conn: asyncpg.Connection,
    bucket: str,
    source: str,
    destination: str,
    *,
    user_id: uuid.UUID | str | None = None,
    role: str = "authenticated",
) -> str:
    """Move an object the way Storage's move API does: a permission test (the UPDATE of name
    and version as the user, rolled back; a refusal raises InsufficientPrivilegeError), then the
    same UPDATE as service_role on the same row. Returns the new version."""
    version = str(uuid.uuid4())
    sql = (
        "update storage.objects set name = $3, version = $4, owner_id = $5"
        " where bucket_id = $1 and name = $2 returning id"
    )
    owner = None if user_id is None else str(user_id)
    if role != "service_role":
        with contextlib.suppress(_Rollback):
            async with as_storage_api(conn, user_id, role):
                if await conn.fetchval(sql, bucket, source, destination, version, owner) is None:
                    raise asyncpg.InsufficientPrivilegeError("no such object for this user")
                raise _Rollback
    async with as_storage_api(conn, None, "service_role"):
        await conn.fetchval(sql, bucket, source, destination, version, owner)
    return version


async def notifications(
    conn: asyncpg.Connection, channel: str = "emgd_jobs"
) -> asyncio.Queue[dict[str, Any]]:
    """LISTEN on ``channel``; every payload (parsed JSON) lands in the returned queue."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def _on(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        queue.put_nowait(json.loads(payload))

    await conn.add_listener(channel, _on)
    return queue


async def drain(
    queue: asyncio.Queue[dict[str, Any]],
    via: asyncpg.Connection,
    *,
    channel: str = "emgd_jobs",
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Every notification committed so far: ``via`` sends a marker on ``channel`` and everything
    that arrives before it is returned.

    PostgreSQL delivers the notifications of different transactions in commit order, so once the
    marker (committed after whatever the test did) arrives, nothing the test caused is still on
    the way: "nothing was notified" is proven, not guessed from a quiet spell, and a slow delivery
    on a loaded machine is waited for (up to ``timeout``) instead of missed. ``via`` must not be
    inside a transaction (the marker would wait for its commit).
    """
    marker = {"_drain_marker": secrets.token_hex(8)}
    await via.execute("select pg_notify($1, $2)", channel, json.dumps(marker))
    items: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while (item := await queue.get()) != marker:
            items.append(item)
    return items


# --- result rows ------------------------------------------------------------------------------


def parameter_row(session_id: uuid.UUID, name: str = "CH1", **overrides: Any) -> dict[str, Any]:
    """A valid public.session_parameters row (the fields of emg_core ChannelResult)."""
    row: dict[str, Any] = {
        "session_id": session_id,
        "name": name,
        "sampling_rate": 1000.0,
        "unit": "V",
        "mvc_value": 0.5,
        "mvc_threshold": 0.375,
        "mvc_method": "session_estimate",
        "duration_threshold_ms": 2000.0,
        "expected_contractions": 12,
        "contractions_total": 10,
        "contractions_good": 8,
        "contractions_mvc_compliant": 9,
        "contractions_duration_compliant": 8,
        "completion_rate": 10 / 12,
        "intensity_rate": 0.9,
        "duration_rate": 0.8,
        "compliance_rate": 8 / 12,
        "time_under_tension_ms": 25000.0,
        "rms": 0.12,
        "mav": 0.1,
        "mpf_hz": 95.0,
        "mdf_hz": 80.0,
        "fi_nsm5": 1e-12,
        "fi_nsm5_relative": 1.2,
        "mpf_slope_hz_per_s": -0.1,
        "mdf_slope_hz_per_s": -0.12,
        "mpf_slope_pct_per_s": -0.1,
        "mdf_slope_pct_per_s": -0.15,
        "signal_quality": 0.95,
        "activation_agreement": None,
        "processing": json.dumps({"band_hz": [20, 450]}),
    }
    row.update(overrides)
    return row


def contraction_row(
    session_id: uuid.UUID, channel: str = "CH1", index: int = 0, **overrides: Any
) -> dict[str, Any]:
    """A valid public.contractions row (emg_core Contraction; index -> contraction_index)."""
    row: dict[str, Any] = {
        "session_id": session_id,
        "channel": channel,
        "contraction_index": index,
        "start_ms": 1000.0,
        "end_ms": 3500.0,
        "duration_ms": 2500.0,
        "peak_amplitude": 0.6,
        "mean_amplitude": 0.4,
        "meets_mvc": True,
        "meets_duration": True,
        "is_good": True,
        "mpf_hz": 90.0,
        "mdf_hz": 75.0,
    }
    row.update(overrides)
    return row


async def insert_row(conn: asyncpg.Connection, table: str, row: dict[str, Any]) -> Any:
    """INSERT one row given as a dict; returns its ``id``. ``table`` is trusted test input."""
    cols = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    return await conn.fetchval(
        f"insert into {table} ({cols}) values ({params}) returning id", *row.values()
    )


async def make_session(
    conn: asyncpg.Connection, patient_id: uuid.UUID | None, name: str = "rec.c3d"
) -> uuid.UUID:
    """A session as the storage trigger makes it: upload ``<patient>/<name>`` as service_role."""
    folder = str(patient_id) if patient_id else "nobody"
    obj = await upload_object(conn, BUCKET, f"{folder}/{name}", role="service_role", data=b"c3d")
    return await conn.fetchval(
        "select id from public.sessions where bucket_id = $1 and object_name = $2",
        BUCKET,
        obj["name"],
    )


async def claimed_upload(
    conn: asyncpg.Connection, patient: uuid.UUID, name: str, data: bytes
) -> asyncpg.Record:
    """Upload ``<patient>/<name>`` as the patient and claim its job as a fresh owner."""
    await upload_object(conn, BUCKET, f"{patient}/{name}", user_id=patient, data=data)
    job = await conn.fetchrow("select * from emgd.claim_jobs($1, 1, 30)", uuid.uuid4())
    assert job is not None and job["object_name"] == f"{patient}/{name}"
    return job


async def complete_job(
    conn: asyncpg.Connection, job: asyncpg.Record, result: dict[str, Any], data: bytes
) -> bool:
    """Commit ``result`` for a claimed job the way the daemon does."""
    return await conn.fetchval(
        "select emgd.complete_job($1, $2, $3::jsonb, $4, $5)",
        job["job_id"],
        job["lease_token"],
        json.dumps(result),
        hashlib.sha256(data).hexdigest(),
        len(data),
    )
