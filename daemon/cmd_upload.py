"""``emgd upload FILE --patient UUID``: what Supabase Storage does on an upload, for local mode.

Stores the bytes with the configured storage backend, then inserts (or, for an overwrite,
updates) the ``storage.objects`` row with a new ``version`` the way Storage's service-role upsert
does, so the same trigger that serves production creates the session and job and wakes the daemon.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

from daemon.dbconnect import add_database_arguments, fail


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the C3D file to upload")
    parser.add_argument("--patient", type=uuid.UUID, required=True, help="the patient's user id")
    parser.add_argument("--name", default=None, help="object file name (default: the file's name)")
    add_database_arguments(parser)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the result")


async def upload(settings, dsn: str, data: bytes, patient: uuid.UUID, filename: str) -> str:
    """Store ``data`` as ``<patient>/<filename>`` and record the object; return the session id."""
    import json

    import asyncpg

    from daemon import queries
    from daemon.storage import make_storage, object_metadata

    name = f"{patient}/{filename}"
    storage = make_storage(settings)
    try:
        await storage.upload(settings.bucket, name, data)
    finally:
        await storage.aclose()
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval(queries.ENSURE_LOCAL_PATIENT, patient):
            print(f"created local patient {patient} (local mode has no Supabase Auth)")
        await conn.execute(
            queries.INSERT_STORAGE_OBJECT,
            settings.bucket,
            name,
            patient,
            json.dumps(object_metadata(data, "application/octet-stream")),
            str(uuid.uuid4()),
        )
        row = await conn.fetchrow(queries.SESSION_FOR_OBJECT, settings.bucket, name)
    finally:
        await conn.close()
    return str(row["id"]) if row else ""


async def wait_for(dsn: str, bucket: str, name: str, timeout: float) -> dict | None:
    import asyncio

    import asyncpg

    from daemon import queries

    conn = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            row = await conn.fetchrow(queries.SESSION_FOR_OBJECT, bucket, name)
            if row and row["status"] in ("completed", "failed"):
                return dict(row)
            if asyncio.get_running_loop().time() > deadline:
                return dict(row) if row else None
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def main(args: argparse.Namespace) -> int:
    import asyncio

    from daemon.dbconnect import plain_url
    from daemon.settings import SettingsError, load_settings

    if not args.file.is_file():
        return fail(f"no such file: {args.file}")
    try:
        settings = load_settings(database_url=plain_url(args), embedded=args.embedded)
    except SettingsError as exc:
        return fail(str(exc))
    if settings.storage_backend != "local":
        return fail("upload stores files only with EMGD_STORAGE_BACKEND=local; use Supabase itself")
    filename = args.name or args.file.name
    from daemon.runtime import resolve_dsn

    with resolve_dsn(args) as dsn:
        session = asyncio.run(upload(settings, dsn, args.file.read_bytes(), args.patient, filename))
        print(f"uploaded {settings.bucket}/{args.patient}/{filename} -> session {session or '-'}")
        if args.wait and session:
            name = f"{args.patient}/{filename}"
            row = asyncio.run(wait_for(dsn, settings.bucket, name, args.wait)) or {}
            print(f"status: {row.get('status', '-')} {row.get('error') or ''}")
    return 0
