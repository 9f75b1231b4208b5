"""The operator page (GET / on the health port) in a real headless browser, against a running
daemon with jobs in every state: what it shows, that it refreshes itself, and that no patient data
reaches it (session ids only: no object paths, file names, patient ids or game metadata).

Needs Chromium (Debian: ``apt-get install chromium``; ``EMGD_CHROMIUM`` names another binary).
Without it the browser test skips, saying so, unless ``EMGD_REQUIRE_BROWSER=1`` (set by .ci/run
wherever it could install Chromium), which makes a missing browser a failure.

``EMGD_OPERATOR_SCREENSHOT=PATH`` keeps the browser's screenshot of the page (docs/ has one).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest

from daemon.local import upload
from daemon.operator_page import OBJECT, redact
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.browser import Browser, find_chromium
from tests.daemon_harness import (
    BUCKET,
    MISBEHAVE_TARGET,
    daemon_settings,
    free_port,
    make_patient,
    recording,
    running_daemon,
    session_for,
    wait_sessions,
)
from tests.isolation_targets import CRASH_MARKER, SLOW_MARKER

# the two running jobs sleep this long: far beyond the test, so they are still running throughout
SLOW_S = 300.0


def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("EMGD_REQUIRE_BROWSER") == "1":
            pytest.fail("EMGD_REQUIRE_BROWSER=1 but no Chromium was found")
        pytest.skip("no Chromium to test the page in (apt-get install chromium, or EMGD_CHROMIUM)")
    return binary


async def wait_state(conn, sid: str, state: str, d, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    query = "select state from emgd.jobs where session_id = $1::uuid"
    while await conn.fetchval(query, sid) != state:
        d.check_alive()
        assert time.monotonic() < deadline, f"session {sid} never reached {state}"
        await asyncio.sleep(0.05)


async def wait_workers_busy(d, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        w = (await d.daemon.activity()).workers
        if w["idle"] == 0 and w["starting"] == 0 and w["size"] == n:
            return
        d.check_alive()
        assert time.monotonic() < deadline, f"the workers never all got busy: {w}"
        await asyncio.sleep(0.1)


async def test_the_page_shows_every_state_and_no_patient_data(db_url, tmp_path):
    binary = chromium()
    port = free_port()
    settings = daemon_settings(
        db_url,
        tmp_path / "storage",
        analysis_target=MISBEHAVE_TARGET,
        concurrency=2,
        health_port=port,
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    good, truth = ghostly_recording(seed=1, duration_s=10.0)
    try:
        async with running_daemon(settings, db_url) as d:
            # ended: one succeeded, two failed (a bad file; an object gone from storage, whose
            # reason quotes its path), one quarantined (the analysis crashed twice)
            ok = await upload(settings, db_url, good, patient, "Jane_Doe_session.c3d")
            bad = await upload(settings, db_url, b"not a recording", patient, "Jane_Doe_bad.c3d")
            gone_name = f"{patient}/Jane_Doe_gone.c3d"
            await dbutil.upload_object(conn, BUCKET, gone_name, user_id=patient, data=b"x" * 99)
            gone = str(await session_for(conn, gone_name))
            crash = await upload(settings, db_url, CRASH_MARKER + recording(2), patient, "c.c3d")
            await wait_sessions(conn, [ok, bad, gone, crash], daemon=d, timeout=120)
            await wait_state(conn, crash, "quarantined", d)
            # running: two analyses far longer than the test fill both slots; pending: one more
            slow = [
                await upload(
                    settings,
                    db_url,
                    SLOW_MARKER + f"{SLOW_S}\n".encode() + recording(3 + i),
                    patient,
                    f"slow{i}.c3d",
                )
                for i in range(2)
            ]
            for sid in slow:
                await wait_state(conn, sid, "running", d)
            waiting = await upload(settings, db_url, recording(5), patient, "waiting.c3d")
            await wait_state(conn, waiting, "pending", d)
            # the crashed workers' replacements warm up (seconds) before the slow jobs reach them
            await wait_workers_busy(d, 2)
            owner = str(d.daemon.owner)

            gone_reason = await conn.fetchval(
                "select last_error from emgd.jobs where session_id = $1::uuid", gone
            )
            assert gone_name in gone_reason, "the test needs a reason that quotes its object"

            async with Browser.launch(binary) as browser:
                await browser.goto(f"http://127.0.0.1:{port}/")
                page = await browser.evaluate(
                    """(() => {
                        const text = s => document.querySelector(s)?.innerText.trim();
                        const rows = s => [...document.querySelectorAll(s + ' tbody tr')].map(
                            r => [...r.cells].map(c => c.innerText.trim()));
                        const depth = {};
                        for (const td of document.querySelectorAll('td[data-state]'))
                            depth[td.dataset.state] = Number(td.innerText);
                        return {
                            title: document.title,
                            refresh: document.querySelector('meta[http-equiv=refresh]')
                                ?.getAttribute('content'),
                            readiness: text('#readiness'),
                            depth,
                            oldest: text('#oldest-pending'),
                            summary: text('#throughput-summary'),
                            minutes: rows('#throughput').length,
                            running: rows('#running'),
                            failures: rows('#failures'),
                            listener: text('#listener-mode'),
                            slots: text('#slots'),
                            workers: text('#workers'),
                            html: document.documentElement.outerHTML,
                        };
                    })()"""
                )
                shot = await browser.screenshot()

                # it refreshes itself: a mark left in this page is gone once it has reloaded
                await browser.evaluate("window.emgdSeen = true")
                await browser.wait_for("window.emgdSeen === undefined", timeout=60)
                await browser.wait_for("document.querySelector('#queue') !== null", timeout=30)
    finally:
        await conn.close()

    keep = os.environ.get("EMGD_OPERATOR_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(shot)
    assert shot.startswith(b"\x89PNG")

    assert page["title"] == "emgd · ready" and page["readiness"] == "ready"
    assert page["refresh"] == "5"
    assert page["depth"] == {
        "pending": 1,
        "running": 2,
        "succeeded": 1,
        "failed": 2,
        "quarantined": 1,
    }
    oldest = r"(\d+ min )?\d+ s \(created \d\d:\d\d:\d\d UTC\)"
    assert re.fullmatch(oldest, page["oldest"]), page["oldest"]
    assert page["summary"].startswith("4 jobs ended in the last 15 minutes"), page["summary"]
    assert "1 succeeded, 2 failed, 1 quarantined" in page["summary"]
    assert page["minutes"] == 15

    assert sorted(r[0] for r in page["running"]) == sorted(slow)
    assert {(r[1], r[4]) for r in page["running"]} == {("analysing", "this daemon")}

    failures = {r[0]: r for r in page["failures"]}
    assert set(failures) == {bad, gone, crash}
    assert failures[crash][1] == "quarantined" and "SIGSEGV" in failures[crash][4]
    assert failures[bad][1] == "failed" and "not a C3D file" in failures[bad][4]
    assert failures[gone][1] == "failed" and OBJECT in failures[gone][4]

    assert page["listener"] == "listening"
    assert page["slots"] == "2 of 2 in use"
    assert page["workers"] == "2 (0 idle, 2 busy, 0 starting)"

    # no patient data: sessions by id, nothing else of theirs
    html = page["html"]
    for secret in (
        owner,  # like /readyz, the page does not give the daemon's lease owner id away
        str(patient),
        "Jane_Doe",
        "slow0.c3d",
        "waiting.c3d",
        f"{BUCKET}/",
        truth.metadata.player_name,
        truth.metadata.game_name,
    ):
        assert secret and secret not in html, f"the page shows {secret!r}"
    assert ok not in html and waiting not in html, "only failed and running sessions are listed"


async def test_without_a_database_the_page_still_shows_the_daemon(db_url, tmp_path):
    # A page over plain HTTP (the browser test above covers rendering): the database's trouble is
    # named, and the listener and workers are still there. The proxy-less way to lose the
    # database mid-run is to point the page's queue at a closed port.
    from daemon.operator_page import Activity, render, snapshot
    from daemon.queue import JobQueue

    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    queue = await JobQueue.connect(closed, max_size=1)
    try:
        activity = Activity(
            owner="0000", ready=False, not_ready={"database": "unavailable"},
            listener_mode="poll", concurrency=2,
            in_flight=0, draining=False, workers={"size": 2, "idle": 2, "starting": 0,
            "restarts": 0, "jobs": 5},
        )  # fmt: skip
        html = render(await snapshot(queue, activity))
    finally:
        await queue.close()
    assert 'id="database-error">Database: query failed (' in html
    assert closed.rsplit(":", 1)[1].split("/")[0] not in html, "error texts stay in the log"
    assert 'id="listener-mode">poll<' in html
    assert "2 (2 idle, 0 busy, 0 starting)" in html


def test_reasons_lose_their_object_path_but_keep_the_rest():
    patient = "6f1c1d9e-6a5b-4a57-9d7e-2f0b8f4c1a11"
    name = f"{patient}/Jane_Doe_2026.c3d"
    reason = f"object not found: emg-sessions/{name}; also '{name}' and Jane_Doe_2026.c3d"
    out = redact(reason, "emg-sessions", name)
    assert out == f"object not found: {OBJECT}; also '{OBJECT}' and {OBJECT}"
    assert (
        redact(f"folder {patient} is not a patient", "b", name)
        == f"folder {OBJECT} is not a patient"
    )
    # an analysis sentence names no object and stays as it is
    sentence = "not a C3D file: 15 bytes is shorter than the 512-byte header"
    assert redact(sentence, "emg-sessions", name) == sentence


async def test_the_page_is_html_and_not_cached(db_url, tmp_path):
    port = free_port()
    settings = daemon_settings(db_url, tmp_path / "storage", health_port=port)
    async with (
        running_daemon(settings, db_url),
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/") as r,
    ):
        body = await r.text()
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/html; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-store"
    assert "Queue" in body and "none pending" in body and "no failures" in body
    assert f"{dt.datetime.now(dt.UTC):%Y-%m-%d}" in body
