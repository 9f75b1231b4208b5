"""``emgd status``: queue depth by state, the oldest pending job, recent failures with reasons."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from daemon.dbconnect import NoDatabaseError, add_database_arguments, database, fail


def configure(parser: argparse.ArgumentParser) -> None:
    add_database_arguments(parser)
    parser.add_argument("--failures", type=int, default=10, help="how many recent failures to list")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


async def collect(dsn: str, failures: int = 10) -> dict[str, Any]:
    import asyncpg

    from daemon.queue import JobQueue

    conn = await asyncpg.connect(dsn)
    try:
        queue = JobQueue(conn)
        depth = await queue.queue_depth()
        failed = await queue.recent_failures(failures)
    finally:
        await conn.close()
    pending = next(d for d in depth if d.state == "pending")
    return {
        "queue": {d.state: d.jobs for d in depth},
        "oldest_pending": pending.oldest.isoformat() if pending.oldest else None,
        "failures": [
            {
                "session_id": f.session_id,
                "object": f"{f.bucket_id}/{f.object_name}",
                "state": f.state,
                "attempts": f.attempts,
                "reason": f.last_error,
                "finished_at": f.finished_at.isoformat() if f.finished_at else None,
            }
            for f in failed
        ],
    }


def render(status: dict[str, Any]) -> str:
    lines = ["queue:"]
    lines += [f"  {state:<12} {n:>8}" for state, n in status["queue"].items()]
    lines.append(f"oldest pending: {status['oldest_pending'] or '-'}")
    if status["failures"]:
        lines.append("recent failures:")
        for f in status["failures"]:
            lines.append(f"  {f['session_id']}  {f['state']:<11} {f['object']}")
            lines.append(f"      {f['reason']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from daemon.embedded import EmbeddedPostgresError

    try:
        with database(args) as dsn:
            status = asyncio.run(collect(dsn, args.failures))
    except (NoDatabaseError, EmbeddedPostgresError) as exc:
        return fail(str(exc))
    except (OSError, ConnectionError) as exc:
        return fail(f"cannot reach the database: {exc}")
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
