"""Report pictures, drawn behind the results: a job commits its results and hands the session
here; the job's slot is free at once, and the picture follows.

One consumer per daemon draws one picture at a time in the analysis pool's report worker (nice
19), so pictures never hold a job slot, a worker or CPU time the next session's analysis needs.
For each session it downloads the recording again through the same storage backend (the backlog
holds no recording bytes), draws it with the committed results, stores the PNG beside the
recording and records ``sessions.report_path``, only for the results it was drawn from.

The backlog is bounded: beyond ``max_backlog`` sessions a picture is skipped (``report_skipped``
in the log), as it is when drawing fails or the daemon stops before reaching it. A session
without a picture is still complete; its next analysis draws one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.queue import ClaimedJob, JobQueue
from daemon.report import report_object_name
from daemon.storage import StorageBackend

log = structlog.get_logger(__name__)

__all__ = ["Reporter"]


class Drawer(Protocol):
    async def render_report(
        self,
        data: bytes | os.PathLike[str],
        *,
        name: str,
        options: dict[str, Any],
        result: dict[str, Any],
    ) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Order:
    job: ClaimedJob
    options: dict[str, Any]
    result: dict[str, Any] | None  # None: read the stored results (copied from identical content)


class Reporter:
    def __init__(
        self,
        queue: JobQueue,
        storage: StorageBackend,
        drawer: Drawer,
        *,
        metrics: Any = None,
        max_backlog: int = 256,
    ) -> None:
        self._queue = queue
        self._storage = storage
        self._drawer = drawer
        self._metrics = metrics
        self._backlog: asyncio.Queue[_Order] = asyncio.Queue(maxsize=max_backlog)
        self._task: asyncio.Task[None] | None = None

    def submit(
        self, job: ClaimedJob, options: dict[str, Any], result: dict[str, Any] | None
    ) -> None:
        """Queue the picture of ``job``'s committed results; never waits."""
        try:
            self._backlog.put_nowait(_Order(job, dict(options), result))
        except asyncio.QueueFull:
            log.warning("report_skipped", session_id=job.session_id, reason="backlog full")
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="reporter")

    async def finish(self, timeout: float) -> None:
        """Draw what is queued within ``timeout`` seconds (shutting down), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._backlog.join(), timeout)
        left = self._backlog.qsize()
        if left:
            log.warning("report_skipped", sessions=left, reason="shutting down")
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            order = await self._backlog.get()
            try:
                await self._draw(order)
            finally:
                self._backlog.task_done()

    async def _draw(self, order: _Order) -> None:
        job = order.job
        t = time.perf_counter()
        try:
            processed_at, stored = await self._queue.report_source(
                job, with_result=order.result is None
            )
            result = order.result if order.result is not None else stored
            if processed_at is None or result is None:
                return  # the session is gone, or has no results any more
            # to a file, as a job does: the daemon never holds a recording's bytes
            with tempfile.TemporaryDirectory(prefix="emgd-report-") as folder:
                got = await self._storage.download_to(
                    job.bucket_id, job.object_name, Path(folder) / "object.c3d"
                )
                png = await self._drawer.render_report(
                    got.path, name=job.object_name, options=order.options, result=result
                )
            path = report_object_name(job.object_name, job.session_id)
            await self._storage.upload(job.bucket_id, path, png, content_type="image/png")
            recorded = await self._queue.set_report_path(job, path=path, processed_at=processed_at)
            elapsed = time.perf_counter() - t
            if self._metrics is not None:
                self._metrics.job_stage_seconds.labels(stage="report").observe(elapsed)
            log.info(
                "report_stored",
                session_id=job.session_id,
                size=len(png),
                recorded=recorded,
                duration_ms=round(elapsed * 1000, 2),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a picture never fails a session, nor the daemon
            log.warning(
                "report_failed", session_id=job.session_id, error=f"{type(exc).__name__}: {exc}"
            )
