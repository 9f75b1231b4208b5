"""The LISTEN connection: a wake-up hint for the claim loop, never the guarantee.

One dedicated asyncpg connection (never from the pool: a pooled connection goes back and forgets
its LISTEN). It reconnects with backoff when the server goes away, and tells the daemon through
``on_connect`` (a plain callback, no I/O) after every verified (re)connect and every loss, so the
daemon can run its catch-up: anything committed while nobody listened is found there. The
catch-up itself runs in the claim loop, never here: work that belongs to the queue must not be
able to kill the listener, and the listener must not run queries from its callbacks.

A connection that accepts ``LISTEN`` is not proof that notifications arrive: Supabase's transaction
pooler (port 6543) accepts the statement and then never delivers. So after every connect, and
every ``probe_interval`` seconds, the listener sends itself a probe through the pool; if it does not
come back within ``probe_timeout`` the listener reports ``poll`` mode (readiness says so) and keeps
retrying. The claim loop polls every ``poll_interval`` whatever the mode, so a missed NOTIFY costs
latency, not work.

The reconnect backoff grows while attempts fail (``backoff_initial`` doubling, with jitter, up to
``backoff_max``) and starts again from the beginning once a connection has been verified, so a
blip after a long healthy stretch is retried at once. ``retry_now()`` cuts a backoff wait short
(the daemon calls it when it sees the database answer again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from daemon.dberrors import DATABASE_ERRORS
from daemon.queue import LISTEN_CHANNEL, PROBE_CHANNEL

log = structlog.get_logger(__name__)

# Whatever the database or the connection raises is worth a reconnect (``daemon/dberrors.py``
# owns the list); anything else is a bug and should stop the daemon.
RECONNECTABLE = DATABASE_ERRORS


class ListenerBroken(Exception):
    """The listen connection is gone or does not deliver notifications."""


# what ends a listen session and is answered by reconnecting after the backoff
_SESSION_LOST: tuple[type[BaseException], ...] = (*RECONNECTABLE, ListenerBroken)


class Listener:
    def __init__(
        self,
        dsn: str,
        *,
        on_notify: Callable[[dict[str, Any]], None],
        on_connect: Callable[[], object],
        send_probe: Callable[[str, str], Awaitable[None]],
        enabled: bool = True,
        probe_interval: float = 30.0,
        probe_timeout: float = 3.0,
        on_reconnect: Callable[[], None] | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._send_probe = send_probe
        self._enabled = enabled
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._on_reconnect = on_reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._failures = 0  # consecutive sessions that ended without a verified connection
        self._backoff: asyncio.Future[None] | None = None
        self._probes: dict[str, asyncio.Future[None]] = {}
        self.mode = "connecting" if enabled else "poll"
        self.reason = "" if enabled else "LISTEN disabled by settings (EMGD_LISTEN=false)"
        self._connects = 0

    @property
    def healthy(self) -> bool:
        """Listening and verified, or deliberately polling: either way no work is lost."""
        return self.mode in ("listening", "poll")

    def retry_now(self) -> None:
        """Cut the current backoff wait short (the database is known to answer again)."""
        if self._backoff is not None and not self._backoff.done():
            self._backoff.cancel()

    def next_delay(self) -> float:
        """The wait before the next connect: exponential in the failures since the last verified
        connection, with up to 50 % jitter so a fleet of daemons does not reconnect in step."""
        if self._failures == 0:
            return 0.0
        delay = min(self._backoff_max, self._backoff_initial * 2 ** (self._failures - 1))
        return float(delay * (0.5 + random.random() / 2))

    async def run(self) -> None:
        """Listen forever; only cancellation ends it (or a bug, which should stop the daemon)."""
        if not self._enabled:
            await self._poll_only()
        while True:
            with contextlib.suppress(*_SESSION_LOST):  # logged by the session; reconnect
                await self._session()
            await self._wait(self.next_delay())

    async def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._backoff = asyncio.ensure_future(asyncio.sleep(seconds))
        try:
            await asyncio.wait({self._backoff})  # returns early when retry_now() cancels it
        finally:
            self._backoff.cancel()
            self._backoff = None

    async def _session(self) -> None:
        conn: asyncpg.Connection | None = None
        lost = asyncio.get_running_loop().create_future()
        try:
            self._failures += 1  # until this connection is verified
            conn = await asyncpg.connect(self._dsn, timeout=10)

            def on_lost(_conn: object) -> None:
                if not lost.done():
                    lost.set_result(None)

            conn.add_termination_listener(on_lost)
            await conn.add_listener(LISTEN_CHANNEL, self._notified)
            await conn.add_listener(PROBE_CHANNEL, self._probed)
            self._connects += 1
            if self._connects > 1 and self._on_reconnect is not None:
                self._on_reconnect()
            if not await self._probe():
                self._poll_mode("LISTEN accepted but notifications do not arrive (pooler?)")
                raise ListenerBroken(self.reason)
            self._failures = 0  # a verified connection: the next loss starts the backoff afresh
            self.mode, self.reason = "listening", ""
            log.info("listener_connected", channel=LISTEN_CHANNEL)
            # Catch-up after the probe: whatever was committed before this point is found by it,
            # whatever comes after is notified to a verified connection.
            self._on_connect()
            while True:
                done, _ = await asyncio.wait({lost}, timeout=self._probe_interval)
                if done:
                    raise ListenerBroken("listen connection closed")
                if not await self._probe():
                    raise ListenerBroken("listen connection stopped delivering notifications")
        except _SESSION_LOST as exc:
            self._poll_mode(str(exc) or type(exc).__name__)
            log.warning("listener_lost", error=self.reason, failed_attempts=self._failures)
            # Work must go on while the listener is away: the catch-up finds objects uploaded
            # while triggers were missing; the poll covers the rest.
            self._on_connect()
            raise
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()

    async def _poll_only(self) -> None:
        # Nothing signals a reconnect here (the pool reconnects silently), so the catch-up that
        # a listener asks for on every connect is asked for on a timer instead.
        while True:
            self._on_connect()
            await asyncio.sleep(self._probe_interval)

    def _poll_mode(self, reason: str) -> None:
        self.mode, self.reason = "poll", reason

    async def _probe(self) -> bool:
        token = uuid.uuid4().hex
        fut = asyncio.get_running_loop().create_future()
        self._probes[token] = fut
        try:
            await self._send_probe(PROBE_CHANNEL, token)
            await asyncio.wait_for(fut, self._probe_timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._probes.pop(token, None)

    def _probed(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        fut = self._probes.get(payload)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload) if payload else {}
        except ValueError:
            message = {}
        message["received_at"] = time.perf_counter()
        self._on_notify(message)
