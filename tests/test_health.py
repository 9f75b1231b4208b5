"""Health server over real HTTP: liveness, readiness with reasons, metrics in a private registry."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from daemon.health import HealthServer, Metrics, Ticker


class Ready:
    """A readiness callback the test flips, like the runner's (database, listener, draining)."""

    def __init__(self) -> None:
        self.ready = True
        self.details: dict = {"database": "ok", "listener": "listening"}
        self.delay = 0.0
        self.error: Exception | None = None

    async def __call__(self):
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.ready, dict(self.details)


@pytest.fixture
async def served():
    # max_age far above a loaded machine's request time; the livez test shortens it itself
    metrics, ready, ticker = Metrics(), Ready(), Ticker(max_age=5.0)
    server = HealthServer(
        "127.0.0.1",
        0,
        metrics=metrics,
        readiness=ready,
        liveness=ticker.liveness,
        readiness_timeout=0.3,
    )
    port = await server.start()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        yield http, metrics, ready, ticker
    await server.stop()


async def get(http, path):
    async with http.get(path) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def test_livez_follows_the_main_loop_tick(served):
    http, _, _, ticker = served
    status, body = await get(http, "/livez")
    assert status == 200 and body["status"] == "alive" and "main_loop_tick_age_s" in body
    ticker.max_age = 0.2
    await asyncio.sleep(0.3)  # main loop stopped ticking for longer than max_age, surely
    status, body = await get(http, "/livez")
    assert status == 503 and body["status"] == "dead" and body["main_loop_tick_age_s"] > 0.2
    ticker.max_age = 5.0
    ticker.tick()
    assert (await get(http, "/livez"))[0] == 200


async def test_readyz_and_healthz_report_reasons(served):
    http, _, ready, _ = served
    for path in ("/readyz", "/healthz"):
        status, body = await get(http, path)
        assert status == 200
        assert body == {"status": "ready", "database": "ok", "listener": "listening"}
    ready.ready = False
    ready.details = {"database": "ok", "listener": "poll-only", "draining": True}
    for path in ("/readyz", "/healthz"):
        status, body = await get(http, path)
        assert status == 503
        assert body == {
            "status": "not_ready",
            "database": "ok",
            "listener": "poll-only",
            "draining": True,
        }


async def test_a_hanging_or_failing_readiness_check_is_not_ready(served):
    http, _, ready, _ = served
    ready.delay = 10.0
    started = time.monotonic()
    status, body = await get(http, "/readyz")
    assert status == 503 and "took over 0.3 s" in body["readiness"]
    # answered at the 0.3 s timeout, not after the 10 s check (a loaded machine adds seconds)
    assert time.monotonic() - started < 5.0
    ready.delay, ready.error = 0.0, ConnectionRefusedError("database down")
    status, body = await get(http, "/readyz")
    # the kind of failure, never its words (they can quote anything)
    assert status == 503 and body["readiness"] == "check failed (ConnectionRefusedError)"


async def test_metrics_expose_every_series(served):
    http, metrics, _, _ = served
    metrics.jobs_claimed_total.inc(3)
    metrics.jobs_finished_total.labels(outcome="succeeded").inc(2)
    metrics.jobs_finished_total.labels(outcome="failed").inc()
    metrics.job_stage_seconds.labels(stage="analyse").observe(0.04)
    metrics.jobs_in_progress.set(1)
    metrics.queue_depth.labels(state="pending").set(7)
    metrics.notifications_total.inc()
    metrics.listener_reconnects_total.inc()
    metrics.notify_to_claim_seconds.observe(0.0015)
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    for line in (
        "emgd_jobs_claimed_total 3.0",
        'emgd_jobs_finished_total{outcome="succeeded"} 2.0',
        'emgd_jobs_finished_total{outcome="failed"} 1.0',
        'emgd_job_stage_seconds_count{stage="analyse"} 1.0',
        "emgd_jobs_in_progress 1.0",
        'emgd_queue_depth{state="pending"} 7.0',
        "emgd_notifications_total 1.0",
        "emgd_listener_reconnects_total 1.0",
        'emgd_notify_to_claim_seconds_bucket{le="0.001"} 0.0',
        'emgd_notify_to_claim_seconds_bucket{le="0.002"} 1.0',
    ):
        assert line in text, line


async def test_two_daemons_in_one_process_have_separate_metrics():
    a, b = Metrics(), Metrics()
    a.jobs_claimed_total.inc()
    assert b"emgd_jobs_claimed_total 1.0" in a.render()
    assert b"emgd_jobs_claimed_total 0.0" in b.render()


async def test_health_answers_while_the_loop_runs_other_work(served):
    """Answers come from the daemon's loop: busy coroutines do not delay them much."""
    http, *_ = served

    async def busy():
        while True:
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(busy()) for _ in range(5)]
    try:
        # a loop the busy tasks starved would never answer; how fast it answers is the
        # machine's business (timed in benchmarks, not here)
        assert (await asyncio.wait_for(get(http, "/livez"), 10))[0] == 200
    finally:
        for t in tasks:
            t.cancel()


async def test_start_on_a_taken_port_fails_and_unknown_paths_404():
    server = HealthServer(
        "127.0.0.1", 0, metrics=Metrics(), readiness=Ready(), liveness=Ticker().liveness
    )
    port = await server.start()
    try:
        clash = HealthServer(
            "127.0.0.1", port, metrics=Metrics(), readiness=Ready(), liveness=Ticker().liveness
        )
        with pytest.raises(OSError):
            await clash.start()
        await clash.stop()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/nope") as resp,
        ):
            assert resp.status == 404
    finally:
        await server.stop()


# ---------------------------------------------------------------- emgd check


async def run_check(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``emgd check`` as Docker runs it: a separate process (the verb module, not the CLI)."""
    import os
    import sys

    code = (
        "import sys, argparse; from daemon import cmd_check as c; p = argparse.ArgumentParser();"
        " c.configure(p); sys.exit(c.main(p.parse_args(sys.argv[1:])))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        *argv,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_check_exit_codes_follow_readiness():
    ready = Ready()
    server = HealthServer(
        "127.0.0.1", 0, metrics=Metrics(), readiness=ready, liveness=Ticker().liveness
    )
    port = await server.start()
    try:
        rc, out, _ = await run_check(env={"EMGD_HEALTH_PORT": str(port)})
        assert rc == 0 and '"ready"' in out
        ready.ready, ready.details = False, {"draining": True}
        rc, _, err = await run_check("--url", f"http://127.0.0.1:{port}/readyz")
        assert rc == 1 and "HTTP 503" in err and "draining" in err
    finally:
        await server.stop()
    rc, _, err = await run_check("--url", f"http://127.0.0.1:{port}/readyz", "--timeout", "1")
    assert rc == 1 and "cannot reach" in err
    rc, _, err = await run_check(env={"EMGD_HEALTH_PORT": "0"})
    assert rc == 1 and "health server is off" in err
