"""Health and metrics over HTTP, served from the daemon's own event loop.

Because the server shares the loop with the claim loop, a blocked loop cannot answer at all —
which is exactly what a liveness probe should see.

Public API
----------
``Metrics()``: Prometheus metrics in their OWN ``CollectorRegistry`` (``.registry``), so two
daemons in one test process never clash. Attributes (exported names get an ``emgd_`` prefix):
    ``jobs_claimed_total``            Counter
    ``jobs_finished_total``           Counter, label ``outcome`` (succeeded|failed|retry|...)
    ``job_stage_seconds``             Histogram, label ``stage`` (download|analyse|save|total)
    ``jobs_in_progress``              Gauge
    ``queue_depth``                   Gauge, label ``state`` (pending|running|failed|...)
    ``notifications_total``           Counter (NOTIFY wake-ups received)
    ``listener_reconnects_total``     Counter
    ``notify_to_claim_seconds``       Histogram, buckets 1 ms .. 1 s
    ``analysis_worker_restarts_total`` Counter (crashed / timed-out workers replaced)
    ``render() -> bytes``             the text exposition format
``Ticker(max_age)``: ``tick()`` from the main loop; ``liveness()`` -> ``(ok, details)`` is false
once no tick came for ``max_age`` seconds. Ready-made liveness callback.
``HealthServer(host, port, *, metrics, readiness, liveness, page=None)``
    ``readiness``: ``async () -> (ready: bool, details: dict)``; ``liveness``: ``() -> (ok, dict)``;
    ``page``: ``async () -> str``, the operator page's HTML (daemon/operator_page.py).
    ``async start() -> int`` binds and returns the port (``port=0`` picks a free one — the
    runner must not start the server at all when ``EMGD_HEALTH_PORT=0``, which means "off");
    ``async stop()``.
Routes: ``/`` the operator page (when ``page`` is given); ``/livez`` 200/503; ``/readyz`` 200
when ready, else 503 with the details as JSON (a readiness check that raises or takes longer than
``readiness_timeout`` counts as not ready); ``/healthz`` = ``/readyz``; ``/metrics`` Prometheus
text. Bodies: ``{"status": ..., **details}``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["HealthServer", "Metrics", "Ticker"]

log = structlog.get_logger(__name__)

Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Liveness = Callable[[], tuple[bool, dict[str, Any]]]
Page = Callable[[], Awaitable[str]]

_STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_NOTIFY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.jobs_claimed_total = Counter("emgd_jobs_claimed", "Jobs claimed", registry=r)
        self.jobs_finished_total = Counter(
            "emgd_jobs_finished", "Jobs finished, by outcome", ["outcome"], registry=r
        )
        self.job_stage_seconds = Histogram(
            "emgd_job_stage_seconds",
            "Time spent per job stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.jobs_in_progress = Gauge("emgd_jobs_in_progress", "Jobs being processed", registry=r)
        self.queue_depth = Gauge(
            "emgd_queue_depth", "Jobs in the queue by state", ["state"], registry=r
        )
        self.notifications_total = Counter(
            "emgd_notifications", "NOTIFY wake-ups received", registry=r
        )
        self.listener_reconnects_total = Counter(
            "emgd_listener_reconnects", "LISTEN connection re-established", registry=r
        )
        self.notify_to_claim_seconds = Histogram(
            "emgd_notify_to_claim_seconds",
            "From NOTIFY received to the job claimed",
            buckets=_NOTIFY_BUCKETS,
            registry=r,
        )
        self.analysis_worker_restarts_total = Counter(
            "emgd_analysis_worker_restarts", "Analysis workers replaced", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Ticker:
    """Liveness from a timestamp the main loop refreshes."""

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self.last = time.monotonic()

    def tick(self) -> None:
        self.last = time.monotonic()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.last
        return age <= self.max_age, {"main_loop_tick_age_s": round(age, 3)}


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Metrics,
        readiness: Readiness,
        liveness: Liveness,
        readiness_timeout: float = 5.0,
        page: Page | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.metrics, self.readiness, self.liveness = metrics, readiness, liveness
        self.page = page
        self.readiness_timeout = readiness_timeout
        self._runner: web.AppRunner | None = None

    async def _livez(self, request: web.Request) -> web.Response:
        try:
            ok, details = self.liveness()
        except Exception as exc:
            log.warning("liveness_check_failed", error=repr(exc))
            ok, details = False, {"error": f"check failed ({type(exc).__name__})"}
        return _answer(ok, "alive" if ok else "dead", details)

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(self.readiness_timeout):
                ready, details = await self.readiness()
        except TimeoutError:
            ready, details = False, {"readiness": f"check took over {self.readiness_timeout:g} s"}
        except Exception as exc:
            # the kind only: a message can quote anything (the log has it)
            log.warning("readiness_check_failed", error=repr(exc))
            ready, details = False, {"readiness": f"check failed ({type(exc).__name__})"}
        return _answer(ready, "ready" if ready else "not_ready", details)

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self.metrics.render())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def _page(self, request: web.Request) -> web.Response:
        assert self.page is not None
        resp = web.Response(text=await self.page(), content_type="text/html", charset="utf-8")
        resp.headers["Cache-Control"] = "no-store"  # the figures are of this moment
        return resp

    async def start(self) -> int:
        app = web.Application()
        if self.page is not None:
            app.router.add_get("/", self._page)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/healthz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _answer(ok: bool, status: str, details: dict[str, Any]) -> web.Response:
    return web.json_response({"status": status, **details}, status=200 if ok else 503)
