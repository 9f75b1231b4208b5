"""A job whose task is cancelled before it ever ran is still handed back (a side task died)."""

from __future__ import annotations

import time
import uuid

import asyncpg

from daemon.health import Metrics
from daemon.jobs import JobRunner
from daemon.queue import JobQueue
from daemon.storage import LocalStorage
from daemon.worker import Daemon
from tests import dbutil
from tests.daemon_harness import daemon_settings


class _NeverCalled:
    async def analyse(self, data, *, name, options):  # pragma: no cover - must not run
        raise AssertionError("the job must not start")


async def test_release_all_hands_back_jobs_whose_task_never_started(db, db_url, tmp_path):
    patient = await dbutil.make_user(db, "patient")
    await dbutil.upload_object(db, dbutil.BUCKET, f"{patient}/x.c3d", user_id=patient, data=b"x")
    settings = daemon_settings(db_url, tmp_path)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    queue = JobQueue(pool)
    daemon = Daemon(
        settings,
        dsn=db_url,
        storage=LocalStorage(tmp_path),
        analyser=_NeverCalled(),
        metrics=Metrics(),
        analysis_version="test",
        queue=queue,
    )
    try:
        runner = JobRunner(
            queue,
            LocalStorage(tmp_path),
            _NeverCalled(),
            metrics=Metrics(),
            analysis_version="test",
        )
        (job,) = await queue.claim(owner=daemon.owner, limit=1, lease_s=30.0)
        # _start creates the task; cancelling it before the loop ever runs it means the runner's
        # own release-on-cancel never executes.
        daemon._start(runner, job, time.perf_counter())
        await daemon._release_all()
    finally:
        await pool.close()
    job = await db.fetchrow("select state, attempts, lease_owner from emgd.jobs")
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("pending", 0, None)


def test_owner_is_a_fresh_uuid_per_daemon(tmp_path):
    settings = daemon_settings("postgresql://unused/x", tmp_path)
    make = lambda: Daemon(  # noqa: E731
        settings,
        dsn="",
        storage=LocalStorage(tmp_path),
        analyser=_NeverCalled(),
        metrics=Metrics(),
        analysis_version="test",
    )
    a, b = make(), make()
    assert isinstance(a.owner, uuid.UUID) and a.owner != b.owner
