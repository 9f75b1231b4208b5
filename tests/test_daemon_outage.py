"""Unit checks of the daemon's runtime: readiness before its first query, and heartbeats that
race the commits of the jobs they extend."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon import queries
from daemon.health import Metrics
from daemon.jobs import ClaimedJob
from daemon.worker import Daemon
from tests.daemon_harness import daemon_settings
from tests.e2e_harness import wait_for

# -- unit: readiness before the first query, heartbeats racing commits ---------------------------


def bare_daemon(tmp_path: Path, **overrides: object) -> Daemon:
    settings = daemon_settings("postgresql://postgres@127.0.0.1:1/none", tmp_path, **overrides)
    return Daemon(
        settings,
        dsn=settings.database_url,
        storage=None,
        analyser=None,
        metrics=Metrics(),
        analysis_version="test",
    )


async def test_readiness_before_any_query_says_so_without_an_age(tmp_path):
    d = bare_daemon(tmp_path)
    ready, details = await d.readiness()
    assert not ready
    assert details["not_ready"]["database"] == "no successful query yet", details


class HeartbeatPool:
    """Answers the lease keeper's statements; ``during_heartbeat`` runs inside the heartbeat."""

    def __init__(self, during_heartbeat) -> None:
        self.during_heartbeat = during_heartbeat
        self.rounds = 0

    async def fetch(self, sql: str, *args: object) -> list:
        if sql == queries.HEARTBEAT:
            await self.during_heartbeat()
            return []  # none of the leases was extended
        if sql == queries.QUEUE_DEPTH:
            self.rounds += 1
            return []
        raise AssertionError(sql)

    async def fetchval(self, sql: str, *args: object) -> object:
        assert sql == queries.RESCUE_EXPIRED, sql
        return 0


def claimed(job_id: int) -> ClaimedJob:
    return ClaimedJob(
        job_id=job_id,
        session_id=str(uuid.uuid4()),
        lease_token=str(uuid.uuid4()),
        attempts=1,
        max_attempts=3,
        crashes=0,
        bucket_id="b",
        object_name="p/x.c3d",
        object_version=None,
        patient_id=None,
    )


async def one_lease_round(d: Daemon, pool: HeartbeatPool) -> list[dict]:
    d._pool = pool
    with capture_logs() as logs:
        keeper = asyncio.create_task(d._lease_loop())
        try:
            await wait_for(lambda: pool.rounds >= 1 or keeper.done(), timeout=10, what="a round")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
    return logs


@pytest.mark.parametrize("job_ends", ["before_the_answer", "after_the_answer"])
async def test_a_job_committed_while_the_heartbeat_ran_is_not_a_lost_lease(tmp_path, job_ends):
    d = bare_daemon(tmp_path, heartbeat_interval=5.0)
    committed = asyncio.Event()

    async def job() -> str:
        await committed.wait()  # the commit lands: the server has cleared the lease
        return "succeeded"

    async def commit_meanwhile() -> None:
        committed.set()
        if job_ends == "before_the_answer":
            await asyncio.sleep(0.05)  # the job's task ends before the heartbeat's answer

    job_ = claimed(41)
    d._in_flight[job_.lease_token] = (asyncio.create_task(job()), job_)
    task = d._in_flight[job_.lease_token][0]
    task.add_done_callback(lambda _t: d._in_flight.pop(job_.lease_token, None))
    logs = await one_lease_round(d, HeartbeatPool(commit_meanwhile))
    assert not [e for e in logs if e["event"] == "leases_lost"], logs
    await task


async def test_a_job_still_running_without_its_lease_is_reported_lost(tmp_path):
    d = bare_daemon(tmp_path, heartbeat_interval=5.0)
    job_ = claimed(42)
    running = asyncio.create_task(asyncio.sleep(60))
    d._in_flight[job_.lease_token] = (running, job_)

    async def nothing() -> None:
        return None

    try:
        logs = await one_lease_round(d, HeartbeatPool(nothing))
    finally:
        running.cancel()
    lost = [e for e in logs if e["event"] == "leases_lost"]
    assert [e["job_ids"] for e in lost] == [[42]], logs
