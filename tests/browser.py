"""A real headless browser for the page tests: Chromium driven over the DevTools protocol.

The protocol is JSON over a WebSocket, which aiohttp (a dependency already) speaks, so neither a
WebDriver package nor a browser download is needed: Chromium is the system's own (Debian:
``apt-get install chromium``; ``EMGD_CHROMIUM`` names another binary).

``find_chromium() -> str | None``; ``async with Browser.launch(binary) as b:`` then
``await b.goto(url)``, ``await b.evaluate(js)``, ``await b.screenshot() -> bytes`` (PNG).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    named = os.environ.get("EMGD_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).exists() else None)
    return next((found for name in NAMES if (found := shutil.which(name))), None)


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls, binary: str, *, width: int = 1200, height: int = 1000
    ) -> AsyncIterator[Browser]:
        profile = Path(tempfile.mkdtemp(prefix="emgd-chromium-"))
        args = [
            binary,
            "--headless=new",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",  # it writes the port it picked into the profile
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # a file, not a pipe: Chromium talks a lot on stderr, and a full pipe would block it
        log = (profile / "stderr.log").open("wb")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        try:
            port = await _debugging_port(proc, profile)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = await r.json()
                url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                async with http.ws_connect(url, max_msg_size=64 << 20) as ws:
                    yield cls(ws)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            shutil.rmtree(profile, ignore_errors=True)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command and its result (events arriving meanwhile are not needed)."""
        ident = next(self._ids)
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(60):
            while True:
                message = await self._ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"the browser closed the connection: {message}")
                reply = json.loads(message.data)
                if reply.get("id") == ident:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """``expression`` evaluated in the page, its value as JSON gives it back."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait until the page has loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", timeout=timeout)

    async def wait_for(self, expression: str, *, timeout: float) -> Any:
        """Until ``expression`` is truthy in the page (across reloads); returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(RuntimeError):  # mid-navigation: no context to run in
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never satisfied: {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self) -> bytes:
        """The whole page, not only the window, as PNG."""
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


async def _debugging_port(proc: subprocess.Popen[bytes], profile: Path) -> int:
    active_port = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while True:
        if active_port.exists():
            first = active_port.read_text().splitlines()[:1]
            if first and first[0].isdigit():
                return int(first[0])
        if proc.poll() is not None:
            err = (profile / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"chromium exited with {proc.returncode}: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("chromium did not open its debugging port within 60 s")
        await asyncio.sleep(0.05)
