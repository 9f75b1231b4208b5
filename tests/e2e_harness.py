"""Real daemon processes for end-to-end tests: start, wait until ready, read JSON logs, stop.

Each ``DaemonProcess`` is ``python -m daemon run --database-url URL`` configured only through
``EMGD_*`` environment variables, as a container would run it, with its stderr (one JSON event per
line) written to a file the test reads. ``Daemons`` starts them and, in ``close()``, kills whatever
is still alive (the daemon and every analysis worker it was seen with), so a failing test never
leaves processes behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from tests.daemon_harness import free_port

REPO = Path(__file__).resolve().parent.parent
SLOW_TARGET = "tests.isolation_targets:slow_analysis"


def processes_marked(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``EMGD_TEST_DAEMON_ID=marker``: a
    daemon and every analysis worker it spawned (workers inherit the daemon's environment)."""
    found = []
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("EMGD_TEST_DAEMON_ID") == marker:
                found.append(p)
    return found


async def wait_for(
    predicate: Any, *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Await ``predicate()`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        await asyncio.sleep(interval)


class DaemonProcess:
    def __init__(self, name: str, dsn: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.dsn = dsn
        self.port = int(env["EMGD_HEALTH_PORT"])
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--database-url", dsn],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.marker = env["EMGD_TEST_DAEMON_ID"]

    # -- observation

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON event logged so far (worker chatter that is not JSON is skipped)."""
        events = []
        for raw in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if isinstance(event, dict) and "event" in event:
                    events.append(event)
        return events

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e["event"] == name]

    def log_text(self, tail: int = 4000) -> str:
        return self.log_path.read_bytes()[-tail:].decode("utf-8", "replace")

    @property
    def owner(self) -> uuid.UUID:
        (started,) = self.events("daemon_started")
        return uuid.UUID(started["owner"])

    def workers(self) -> list[psutil.Process]:
        """The analysis worker processes alive under this daemon now."""
        with contextlib.suppress(psutil.NoSuchProcess):
            return self.ps.children(recursive=True)
        return []

    async def get(self, path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + path, timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def wait_ready(self, timeout: float = 45.0) -> None:
        async def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon {self.name} exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_text()
                )
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                status, _ = await self.get("/readyz")
                return status == 200
            return False

        await wait_for(ready, timeout=timeout, interval=0.1, what=f"{self.name} /readyz 200")

    # -- control

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        await wait_for(
            lambda: self.proc.poll() is not None, timeout=timeout, what=f"{self.name} to exit"
        )
        return self.proc.returncode

    async def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of this daemon: itself or any analysis worker it started (found by the
        marker in their environment, so workers that died or were replaced early count too)."""
        return processes_marked(self.marker)

    def close(self) -> None:
        """Kill the daemon and its workers if still alive, each by its own pid."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for p in processes_marked(self.marker):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()  # psutil checks the pid still names the process it found
        self._log.close()


class Daemons:
    """Starts daemon processes on one database and storage folder; ``close()`` cleans up."""

    def __init__(self, dsn: str, workdir: Path) -> None:
        self.dsn = dsn
        self.workdir = workdir
        self.storage = workdir / "storage"
        self.storage.mkdir(exist_ok=True)
        self.started: list[DaemonProcess] = []

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("EMGD_") and k != "DATABASE_URL"
        }
        env.update(
            PYTHONPATH=os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH")] if p),
            EMGD_STORAGE_BACKEND="local",
            EMGD_LOCAL_STORAGE_DIR=str(self.storage),
            EMGD_HEALTH_HOST="127.0.0.1",
            EMGD_HEALTH_PORT=str(free_port()),
            EMGD_LOG_FORMAT="json",
            EMGD_POLL_INTERVAL="0.5",
            EMGD_LEASE_SECONDS="3",
            EMGD_CONCURRENCY="2",
        )
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def start(self, name: str, *, dsn: str | None = None, **env: Any) -> DaemonProcess:
        env.setdefault("EMGD_TEST_DAEMON_ID", f"{name}-{uuid.uuid4().hex}")
        daemon = DaemonProcess(name, dsn or self.dsn, self.workdir, self.env(**env))
        self.started.append(daemon)
        return daemon

    async def start_ready(self, name: str, **env: Any) -> DaemonProcess:
        daemon = self.start(name, **env)
        await daemon.wait_ready()
        return daemon

    def close(self) -> None:
        for daemon in self.started:
            daemon.close()


# -- database side -------------------------------------------------------------------------------


async def job_of(conn: asyncpg.Connection, session_id: str | uuid.UUID) -> asyncpg.Record:
    return await conn.fetchrow(
        "select j.*, s.status, s.stage, s.error, s.processed_at from emgd.jobs j"
        " join public.sessions s on s.id = j.session_id where j.session_id = $1::uuid",
        str(session_id),
    )


async def wait_job(
    conn: asyncpg.Connection, session_id: str | uuid.UUID, *, timeout: float, **expect: Any
) -> asyncpg.Record:
    """Wait until the job (joined with its session) has every ``column=value`` in ``expect``."""

    async def matches() -> asyncpg.Record | None:
        row = await job_of(conn, session_id)
        return row if row and all(row[k] == v for k, v in expect.items()) else None

    return await wait_for(matches, timeout=timeout, what=f"job of {session_id} with {expect}")


async def peak_rss_while_running(
    conn: asyncpg.Connection,
    proc: psutil.Process,
    sessions: list[Any],
    *,
    peak: int,
    timeout: float = 120,
    while_all_run: Callable[[], None] | None = None,
) -> tuple[int, bool]:
    """Sample ``proc``'s RSS every 20 ms until no job of ``sessions`` is pending or running (or
    ``timeout`` passes). Returns the highest RSS seen (``peak`` at least) and whether all the
    jobs were running at once; ``while_all_run`` is called at each sample where they are."""
    all_ran = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        peak = max(peak, proc.memory_info().rss)
        states = [
            r["state"]
            for r in await conn.fetch(
                "select state from emgd.jobs where session_id = any($1::uuid[])", sessions
            )
        ]
        if states.count("running") == len(sessions):
            all_ran = True
            if while_all_run is not None:
                while_all_run()
        if all(s not in ("pending", "running") for s in states):
            break
        await asyncio.sleep(0.02)
    return peak, all_ran
