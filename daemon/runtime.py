"""Assemble a running daemon from settings: database (given or embedded), storage, analysis pool,
health server, signal handlers. ``emgd run`` and ``emgd demo`` both come through here.

The process ends when the daemon says it does. ``run_loop`` replaces ``asyncio.run``, which at
the end waits without limit for the loop's executor threads (Python 3.11): one thread stuck in a
kernel call (a read on a hung mount, a DNS lookup that never answers) kept a daemon that had
logged ``daemon_stopped`` alive. ``run_loop`` gives them ``THREAD_GRACE_S``; then
``exit_if_threads_linger`` is the documented last resort: it logs ``threads_left_behind`` (their
names) and ends the process with ``os._exit`` and the daemon's exit code, since nothing else can
stop a thread blocked in the kernel. The daemon's own blocking reads run in daemon threads (see
``daemon/storage.py``), so in the ordinary case no thread is left and the process exits normally.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from daemon.settings import Settings

log = structlog.get_logger(__name__)

#: seconds the stopped daemon waits for executor threads before giving up on them
THREAD_GRACE_S = 5.0
_EXECUTOR_PREFIX = "emgd-loop-executor"


def run_loop(main: Coroutine[Any, Any, int], *, thread_grace: float = THREAD_GRACE_S) -> int:
    """``asyncio.run(main)``, but the executor's threads get ``thread_grace`` seconds, not forever.

    Like ``asyncio.run``: a new loop, the coroutine's result returned, tasks it left cancelled,
    async generators closed, the loop closed. Threads still busy afterwards are left to
    ``exit_if_threads_linger``.
    """
    loop = asyncio.new_event_loop()
    # Our own executor, so its threads can be waited for with a bound: the loop's
    # shutdown_default_executor() joins them without one, even when cancelled.
    executor = ThreadPoolExecutor(thread_name_prefix=_EXECUTOR_PREFIX)
    loop.set_default_executor(executor)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            deadline = time.monotonic() + thread_grace
            for thread in threading.enumerate():
                if thread.name.startswith(_EXECUTOR_PREFIX + "_"):
                    thread.join(max(0.0, deadline - time.monotonic()))
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def lingering_threads() -> list[threading.Thread]:
    """Threads that would keep the interpreter from exiting (alive, not daemon threads)."""
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and t.is_alive() and not t.daemon]


def exit_if_threads_linger(code: int) -> None:
    """Last resort, after the daemon stopped: end the process now if threads would hold it.

    Returns when none linger (the normal case). Otherwise logs ``threads_left_behind`` and calls
    ``os._exit(code)``: the clean-up that matters (jobs released, pool and database closed,
    workers stopped) has already run by then.
    """
    stuck = lingering_threads()
    if not stuck:
        return
    log.error(
        "threads_left_behind",
        threads=[t.name for t in stuck],
        exit_code=code,
        action="exiting without waiting for them (os._exit)",
    )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


@contextlib.contextmanager
def embedded_database(settings: Settings) -> Iterator[str]:
    """Start the embedded PostgreSQL, apply the stand-in and migrations, yield its DSN."""
    from daemon.embedded import EmbeddedPostgres
    from daemon.migrate import apply_migrations

    server = EmbeddedPostgres(settings.embedded_dir)
    dsn = server.start()
    try:
        applied = asyncio.run(apply_migrations(dsn, local_supabase=True))
        if applied:
            log.info("migrations_applied", files=applied)
        yield dsn
    finally:
        server.stop()


@contextlib.contextmanager
def resolve_dsn(args: argparse.Namespace) -> Iterator[str]:
    """The DSN a CLI verb uses: --database-url / env, or the embedded server with --embedded."""
    from daemon.dbconnect import plain_url
    from daemon.settings import load_settings

    url = plain_url(args)
    if url and not getattr(args, "embedded", None):
        yield url
        return
    settings = load_settings(embedded=True)
    with embedded_database(settings) as dsn:
        yield dsn


def analysis_version() -> str:
    from emg_core import ANALYSIS_VERSION

    return ANALYSIS_VERSION


async def serve(
    settings: Settings,
    dsn: str,
    *,
    analyser: Any | None = None,
    on_started: Any | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or ``on_started``'s caller asks it to stop)."""
    from urllib.parse import urlsplit

    from daemon.health import Metrics
    from daemon.isolation import AnalysisPool
    from daemon.logs import redact
    from daemon.storage import make_storage
    from daemon.worker import Daemon

    key = settings.supabase_service_role_key
    redact(key.get_secret_value() if key else None, urlsplit(dsn).password)
    metrics = Metrics()
    storage = make_storage(settings)
    pool: AnalysisPool | None = None
    daemon: Daemon | None = None
    stop_requested = False

    def on_signal() -> None:
        # Handlers go in before the analysis workers warm up (seconds): a SIGTERM then is still an
        # orderly stop (exit 0, clean-up runs), not death by the default handler (exit -15).
        nonlocal stop_requested
        stop_requested = True
        if daemon is not None:
            daemon.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        if analyser is None:
            pool = AnalysisPool(
                settings.concurrency,
                timeout_s=settings.job_timeout,
                memory_mb=settings.job_memory_mb,
                target=settings.analysis_target,
                reports=True,
            )
            await pool.start()
            analyser = pool
        daemon = Daemon(
            settings,
            dsn=dsn,
            storage=storage,
            analyser=analyser,
            metrics=metrics,
            analysis_version=analysis_version(),
            pool_stats=pool.stats if pool is not None else None,
        )
        if stop_requested:  # asked to stop while starting: nothing was claimed, nothing to drain
            log.info("daemon_stopped", exit_code=0, during_start=True)
            return 0
        if on_started is not None:
            on_started(daemon)
        return await daemon.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if pool is not None:
            await pool.close()
        await storage.aclose()
