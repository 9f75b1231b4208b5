"""``emgd requeue``: the operator's requeue, a thin wrapper over the emgd.requeue* SQL functions.

The same work can be done in plain SQL (``select emgd.requeue_failed('1 day')``); either way the
jobs' trigger NOTIFYs and a running daemon starts at once.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from daemon.dbconnect import NoDatabaseError, add_database_arguments, database, fail


def configure(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--session", type=uuid.UUID, help="requeue one session by id")
    what.add_argument("--failed", action="store_true", help="requeue failed and quarantined jobs")
    what.add_argument("--all", action="store_true", help="reprocess every finished session")
    parser.add_argument(
        "--since", default=None, help="with --failed: only those that ended within this interval"
    )


async def requeue(dsn: str, args: argparse.Namespace) -> int:
    import asyncpg

    from daemon.queue import JobQueue

    conn = await asyncpg.connect(dsn)
    try:
        queue = JobQueue(conn)
        if args.session:
            return await queue.requeue(args.session)
        if args.failed:
            return await queue.requeue_failed(args.since)
        return await queue.reprocess_all()
    finally:
        await conn.close()


def main(args: argparse.Namespace) -> int:
    from daemon.embedded import EmbeddedPostgresError

    try:
        with database(args) as dsn:
            n = asyncio.run(requeue(dsn, args))
    except (NoDatabaseError, EmbeddedPostgresError) as exc:
        return fail(str(exc))
    except (OSError, ConnectionError) as exc:
        return fail(f"cannot reach the database: {exc}")
    print(f"requeued {n} job(s)")
    return 0
