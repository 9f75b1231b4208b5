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


async def notifications(
    conn: asyncpg.Connection, channel: str = "emgd_jobs"
) -> asyncio.Queue[dict[str, Any]]:
    """LISTEN on ``channel``; every payload (parsed JSON) lands in the returned queue."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def _on(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        queue.put_nowait(json.loads(payload))

    await conn.add_listener(channel, _on)
    return queue


async def drain(queue: asyncio.Queue[T], *, wait: float = 0.3) -> list[T]:
    """Everything that arrives within ``wait`` seconds of the last item."""
    items: list[T] = []
    while True:
        try:
            items.append(await asyncio.wait_for(queue.get(), timeout=wait))
        except TimeoutError:
            return items
