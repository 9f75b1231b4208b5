"""``emgd upload FILE --patient UUID``: what Supabase Storage does on an upload, for local mode.

Stores the bytes with the local storage backend, then inserts (or, for an overwrite, updates)
the ``storage.objects`` row with a new ``version`` the way Storage's service-role upsert does, so
the same trigger that serves production creates the session and job and wakes the daemon. The
work is ``daemon.local.upload``; the bucket is the database's (``emgd.config.bucket``).
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

from daemon.dbconnect import add_database_arguments, fail
from daemon.local import upload, wait_for

__all__ = ["configure", "main", "upload"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the C3D file to upload")
    parser.add_argument("--patient", type=uuid.UUID, required=True, help="the patient's user id")
    parser.add_argument("--name", default=None, help="object file name (default: the file's name)")
    add_database_arguments(parser)
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the result")


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
        print(f"uploaded {args.patient}/{filename} -> session {session or '-'}")
        if args.wait and session:
            name = f"{args.patient}/{filename}"
            row = asyncio.run(wait_for(dsn, name, args.wait)) or {}
            print(f"status: {row.get('status', '-')} {row.get('error') or ''}")
    return 0
