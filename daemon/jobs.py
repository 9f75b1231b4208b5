"""One claimed job, from download to the lease-checked commit, and how each failure is classified.

The failure model in one place:

================================  ==========================================================
what went wrong                   what happens to the job
================================  ==========================================================
object outside a patient folder   failed at once (permanent)
object gone, hostile name         failed at once (permanent)
empty file, bad C3D, no EMG       failed at once with emg_core's sentence (permanent)
unexpected error in the analysis  failed at once; the reason names the error's type only, its
or in the daemon                  message and traceback are logged (numpy's words are no reason)
worker crashed / timed out        retried once; the second time quarantined
storage 5xx, timeouts, DB blips   back to pending with exponential backoff + jitter, until
                                  max_attempts, then failed
database out of disk, memory,     the same (SQLSTATE classes 08, 40, 53, 57: the server's
connections; shutdown; deadlock   trouble, not the file's; see daemon/dberrors.py)
results rejected by a trigger     failed with the trigger's message (nothing was written):
or a constraint                   data (22), integrity (23) and every other SQLSTATE
lease lost                        nothing written; the new owner finishes it
storage rejects our key (or the   released back to pending, attempt not counted; the daemon
bucket is missing)                stops claiming until its credential check passes again
daemon shutting down              released back to pending, attempt not counted
================================  ==========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.dberrors import DATABASE_ERRORS, describe, is_transient
from daemon.isolation import AnalysisRejected, WorkerCrashed, WorkerTimeout
from daemon.queue import ClaimedJob, JobQueue, Reuse, Stage
from daemon.reporter import Reporter
from daemon.storage import (
    StorageBackend,
    StorageError,
    StorageNotConfigured,
    StorageUnavailable,
)

log = structlog.get_logger(__name__)

# A crash or timeout may be bad luck (OOM killer, a noisy neighbour) once; twice is the file.
QUARANTINE_AFTER_CRASHES = 2
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 300.0

__all__ = ["Analyser", "ClaimedJob", "JobRunner", "Permanent"]


class Analyser(Protocol):
    # The daemon hands over the downloaded file's path (it never holds a recording's bytes);
    # ``bytes`` is for callers that have them in hand.
    async def analyse(
        self, data: bytes | os.PathLike[str], *, name: str, options: dict[str, Any]
    ) -> dict[str, Any]: ...


def _job_prefix(pid: int) -> str:
    # host and pid in the name: a later daemon on this host can tell a dead one's leftovers
    return f"emgd-job-{socket.gethostname()}-{pid}-"


def sweep_dead_downloads(download_dir: str | os.PathLike[str] | None) -> int:
    """Remove the download folders that daemons on this host left when they were killed (a
    daemon's folder normally goes with it); returns how many. Folders of live processes, and of
    other hosts sharing the folder, are left alone."""
    root = Path(download_dir or tempfile.gettempdir())
    mine = f"emgd-job-{socket.gethostname()}-"
    removed = 0
    with contextlib.suppress(OSError):
        for folder in root.glob(f"{mine}*"):
            pid = folder.name[len(mine) :].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Permanent(Exception):
    """The file itself is the problem: retrying cannot help."""


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter for the attempt that just failed (1-based)."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** max(attempt - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


class JobRunner:
    """Runs claimed jobs; stateless between jobs apart from its collaborators."""

    def __init__(
        self,
        queue: JobQueue,
        storage: StorageBackend,
        analyser: Analyser,
        *,
        metrics: Any,
        analysis_version: str,
        options: dict[str, Any] | None = None,
        max_file_bytes: int | None = None,
        on_storage_not_configured: Callable[[StorageNotConfigured, str], Awaitable[bool]]
        | None = None,
        download_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """``on_storage_not_configured(exc, bucket)``: told when Storage answers a download as it
        answers a rejected key; True when it confirms a configuration error (the credential
        check fails too), and the job is then handed back untouched, since no file is at fault.
        Otherwise the answer counts as ordinary storage trouble."""
        self._on_storage_not_configured = on_storage_not_configured
        self._queue = queue
        self._max_bytes = max_file_bytes
        self._download_dir = download_dir
        self._downloads: Path | None = None  # this daemon's folder, made at its first job
        sweep_dead_downloads(download_dir)
        self._storage = storage
        self._analyser = analyser
        self._metrics = metrics
        self._version = analysis_version
        self._options = dict(options or {})
        # An analyser that cannot draw (a test's) gets no pictures.
        self._reporter = (
            Reporter(queue, storage, analyser, metrics=metrics)  # type: ignore[arg-type]
            if hasattr(analyser, "render_report")
            else None
        )

    async def run(self, job: ClaimedJob) -> str:
        """Process one job to an outcome; never raises except CancelledError (after releasing)."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        outcome, reason = "failed", None
        failure: BaseException | None = None
        with structlog.contextvars.bound_contextvars(
            # pseudonymous ids only: an object name is a file name, which can name a patient
            job_id=job.job_id,
            session_id=job.session_id,
        ):
            try:
                outcome = await self._process(job, timings)
            except asyncio.CancelledError:
                # Shutdown past the grace period: hand the job back untouched.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._queue.release(job))
                log.info("job_released", attempt=job.attempts)
                self._metrics.jobs_finished_total.labels(outcome="released").inc()
                raise
            except StorageNotConfigured as exc:
                failure = exc
                confirmed = self._on_storage_not_configured is not None and (
                    await self._on_storage_not_configured(exc, job.bucket_id)
                )
                if confirmed:
                    # A configuration error: every job would meet it. This one waits, uncounted.
                    try:
                        released = await self._queue.release(job)
                    except DATABASE_ERRORS:
                        released = False  # the lease expires and the job runs later anyway
                    outcome = "waiting" if released else "abandoned"
                else:  # the check passes: a passing glitch, retried like any storage trouble
                    outcome = await self._retry_or_fail(job, f"storage unavailable: {exc}")
            except (Permanent, AnalysisRejected, StorageError) as exc:
                failure = exc
                reason = str(exc)
                if isinstance(exc, StorageUnavailable):
                    outcome = await self._retry_or_fail(job, f"storage unavailable: {exc}")
                else:
                    outcome = await self._finish(job, "failed", reason)
            except (WorkerCrashed, WorkerTimeout) as exc:
                failure = exc
                reason = str(exc)
                if job.crashes + 1 >= QUARANTINE_AFTER_CRASHES:
                    reason = f"{exc} (twice: quarantined; requeue after fixing the file)"
                    outcome = await self._finish(job, "quarantined", reason, crashed=True)
                else:
                    outcome = await self._retry_or_fail(job, str(exc), crashed=True)
            except DATABASE_ERRORS as exc:
                failure = exc
                if is_transient(exc):
                    # The server's trouble (disk full, shutdown, connection, deadlock): the same
                    # statement can succeed later, so the job waits and tries again.
                    reason = f"database unavailable: {describe(exc)}"
                    outcome = await self._retry_or_fail(job, reason)
                else:
                    # A validation trigger or a constraint refused the results: the data is wrong.
                    reason = f"results rejected by the database: {exc}"
                    outcome = await self._finish(job, "failed", reason)
            except Exception as exc:  # a bug must cost one job, not the daemon
                failure = exc
                # The message and traceback go to the log; the session gets a sentence.
                reason = (
                    f"internal error ({type(exc).__name__}) while processing this file; it was"
                    " not analysed (the details are in the daemon's log)"
                )
                log.exception("job_internal_error")
                outcome = await self._finish(job, "failed", reason)
            total = time.perf_counter() - started
            self._metrics.jobs_finished_total.labels(outcome=outcome).inc()
            log.info(
                "job_finished",
                outcome=outcome,
                attempt=job.attempts,
                # the kind only: reasons can name the object (a file name); they are in
                # emgd.jobs.last_error, found by job_id
                error=type(failure).__name__ if failure is not None else None,
                duration_ms=round(total * 1000, 2),
                **{f"{k}_ms": round(v * 1000, 2) for k, v in timings.items()},
            )
        return outcome

    async def _process(self, job: ClaimedJob, timings: dict[str, float]) -> str:
        if job.patient_id is None:
            raise Permanent(
                f"'{job.object_name}' is not under a known patient's folder"
                " (expected <patient user id>/<file>.c3d)"
            )
        self._check_size(job.object_size)
        # The object streams to a file of this job's own: the daemon's memory stays one chunk
        # whatever the file's size, and the analysis worker reads the file itself. One folder
        # per daemon process, one file per claim (the lease token: a job claimed again while a
        # superseded task still runs gets a file of its own).
        dest = self._folder() / f"{job.lease_token}.c3d"
        try:
            return await self._process_file(job, timings, dest)
        finally:
            _remove(dest)

    def _folder(self) -> Path:
        # made again if something (a temp cleaner) removed it: else every download would fail
        if self._downloads is None or not self._downloads.is_dir():
            self._downloads = Path(
                tempfile.mkdtemp(prefix=_job_prefix(os.getpid()), dir=self._download_dir)
            )
        return self._downloads

    def remove_downloads(self) -> None:
        """The daemon is stopping: its download folder goes with it."""
        if self._downloads is not None:
            shutil.rmtree(self._downloads, ignore_errors=True)
        self._downloads = None

    async def _process_file(self, job: ClaimedJob, timings: dict[str, float], dest: Path) -> str:
        # No stage write here: the claim itself shows the session as downloading.
        t = time.perf_counter()
        got = await self._storage.download_to(job.bucket_id, job.object_name, dest)
        timings["download"] = self._observe("download", t)
        self._check_size(got.size)  # storage metadata can be missing or stale
        if not got.size:
            raise Permanent("the file is empty (0 bytes)")

        # The patient's targets and MVC over the daemon's own options, read after the claim
        # committed (a settings change takes a running job back, so a job never commits options
        # older than its claim); then identical content already analysed with exactly those
        # options is reused, else the stage becomes "analysing". One statement for all of it.
        verdict, options = await self._queue.reuse_or_stage(
            job,
            sha256=got.sha256,
            size=got.size,
            analysis_version=self._version,
            base_options=self._options,
            next_stage=Stage.ANALYSING,
        )
        if verdict is Reuse.REUSED and self._reporter is not None:
            self._reporter.submit(job, options, None)
        if verdict is not Reuse.STAGED:
            return str(verdict)
        t = time.perf_counter()
        result = await self._analyser.analyse(got.path, name=job.object_name, options=options)
        timings["analyse"] = self._observe("analyse", t)
        # The file is spent once analysed: its disk space (up to the size limit per job) is not
        # held through the commit, and an analysed session shown as done has no file left.
        _remove(got.path)
        # The options that produced the result travel with it so identical reruns can be skipped.
        result.setdefault("processing", {})["options"] = options

        # No "saving" stage write: the results' commit is the save, and lasts milliseconds; a
        # stage written just before it would cost the queue a statement per job for a state
        # nobody sees. The session shows "analysing" until it is done.
        t = time.perf_counter()
        committed = await self._queue.complete(
            job,
            result_json=json.dumps(result, allow_nan=False),
            sha256=got.sha256,
            size=got.size,
        )
        timings["save"] = self._observe("save", t)
        if not committed:
            return "lease_lost"
        # the picture follows the results, outside this job's slot
        if self._reporter is not None:
            self._reporter.submit(job, options, result)
        return "succeeded"

    async def finish_reports(self, timeout: float) -> None:
        """Shutting down: draw the pictures still queued, within ``timeout`` seconds."""
        if self._reporter is not None:
            await self._reporter.finish(timeout)

    def _check_size(self, size: int | None) -> None:
        if size is not None and self._max_bytes is not None and size > self._max_bytes:
            raise Permanent(
                f"the file is {size / 1e6:.1f} MB, above the {self._max_bytes / 1e6:.0f} MB limit"
                " (EMGD_MAX_FILE_MB); a recording this large is not a GHOSTLY session"
            )

    def _observe(self, stage: str, since: float) -> float:
        elapsed = time.perf_counter() - since
        self._metrics.job_stage_seconds.labels(stage=stage).observe(elapsed)
        return elapsed

    async def _retry_or_fail(self, job: ClaimedJob, reason: str, *, crashed: bool = False) -> str:
        """Back to pending with backoff, or failed once the job has used its attempts: the
        database decides, with the limit the rescue of an expired lease applies too."""
        try:
            state = await self._queue.retry(
                job, reason, after_s=backoff_seconds(job.attempts), crashed=crashed
            )
        except DATABASE_ERRORS as exc:
            log.warning("job_finish_failed", error=repr(exc))
            return "abandoned"
        return "retry" if state == "pending" else state

    async def _finish(
        self, job: ClaimedJob, state: str, reason: str, *, crashed: bool = False
    ) -> str:
        try:
            if state == "quarantined":
                ok = await self._queue.quarantine(job, reason)
            else:
                ok = await self._queue.fail(job, reason, crashed=crashed)
        except DATABASE_ERRORS as exc:
            # The lease will expire and another pass will pick the job up: nothing is lost.
            log.warning("job_finish_failed", error=repr(exc))
            return "abandoned"
        return state if ok else "lease_lost"
