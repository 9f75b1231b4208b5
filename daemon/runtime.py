"""Assemble a running daemon from settings: database (given or embedded), storage, analysis pool,
health server, signal handlers. ``emgd run`` and ``emgd demo`` both come through here."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import structlog

from daemon.settings import Settings

log = structlog.get_logger(__name__)


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
    from daemon.health import Metrics
    from daemon.isolation import AnalysisPool
    from daemon.storage import make_storage
    from daemon.worker import Daemon

    metrics = Metrics()
    storage = make_storage(settings)
    pool = None
    daemon = None
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
