"""The listener's reconnect backoff: it grows while connecting fails and starts afresh once a
connection has been verified, so a blip after a long healthy stretch costs no long wait.

No database here: ``asyncpg.connect`` is replaced by a script of failures and one good connection
whose self-probe comes back, and ``asyncio.sleep`` records the waits instead of sleeping them.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from daemon import queue
from daemon.listener import Listener

INITIAL, MAX = 0.2, 10.0


class FakeConnection:
    def __init__(self) -> None:
        self.on_close: list = []
        self.closed = False

    def add_termination_listener(self, callback) -> None:
        self.on_close.append(callback)

    async def add_listener(self, channel: str, callback) -> None:
        pass

    def is_closed(self) -> bool:
        return self.closed

    def terminate(self) -> None:
        self.closed = True

    def server_closes(self) -> None:
        self.closed = True
        for callback in self.on_close:
            callback(self)


class Script:
    """``connect`` fails ``before`` times, then gives one good connection (the test closes it),
    then fails for ever. ``sleep`` records every wait of the listener."""

    def __init__(self, before: int) -> None:
        self.before = before
        self.attempts = 0
        self.good: FakeConnection | None = None
        self.connected = asyncio.Event()
        self.waits: list[float] = []
        self.waits_after_good: list[float] = []

    async def connect(self, dsn: str, **kwargs: object) -> FakeConnection:
        self.attempts += 1
        if self.attempts == self.before + 1:
            self.good = FakeConnection()
            return self.good
        raise ConnectionRefusedError(111, "Connection refused")

    async def sleep(self, seconds: float, result: object = None) -> object:
        (self.waits_after_good if self.good is not None else self.waits).append(seconds)
        await _real_sleep(0)
        return result


_real_sleep = asyncio.sleep


def listener_for(script: Script) -> Listener:
    listener: Listener

    async def send_probe(channel: str, token: str) -> None:
        assert channel == queue.PROBE_CHANNEL
        listener._probed(None, 0, channel, token)  # the probe comes back at once

    def on_connect():
        if script.good is not None and listener.mode == "listening":
            script.connected.set()
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done  # the listener only has to tell; nothing here needs awaiting

    listener = Listener(
        "postgresql://unused",
        on_notify=lambda message: None,
        on_connect=on_connect,
        send_probe=send_probe,
        probe_interval=3600.0,
        probe_timeout=5.0,
    )
    return listener


@pytest.fixture
def script(monkeypatch) -> Script:
    s = Script(before=12)  # enough failures to reach the cap
    monkeypatch.setattr(asyncpg, "connect", s.connect)
    monkeypatch.setattr(asyncio, "sleep", s.sleep)
    return s


async def test_the_backoff_grows_to_its_cap_and_resets_after_a_verified_connection(script):
    listener = listener_for(script)
    task = asyncio.create_task(listener.run())
    try:
        await asyncio.wait_for(script.connected.wait(), 30)
        assert listener.mode == "listening"
        # While connecting failed, the waits grew up to the cap.
        assert len(script.waits) >= 10, script.waits
        assert max(script.waits) <= MAX * 1.1 + 1.0, script.waits
        assert max(script.waits[-3:]) >= MAX / 2, script.waits

        # A long healthy stretch, then the server goes away and comes back only later.
        script.good.server_closes()
        while len(script.waits_after_good) < 4:
            assert not task.done(), task
            await _real_sleep(0.001)
        first = script.waits_after_good[:4]
        # The first waits after a verified connection start again from the initial backoff.
        assert first[0] <= INITIAL * 2, first
        assert max(first) < MAX / 2, first
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
