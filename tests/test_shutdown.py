"""A daemon exits when it says it does: after SIGTERM and the drain bound, no download stuck in
storage (a named pipe, a server dripping bytes) and no thread stuck in the kernel keeps the
process alive after ``daemon_stopped``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import asyncpg
import pytest

from daemon.local import upload
from daemon.settings import load_settings
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.e2e_harness import REPO, job_of, wait_for, wait_job
from tests.test_download_deadline import fifo, record_object

pytestmark = pytest.mark.e2e

BUCKET = dbutil.BUCKET
KEY = "shutdown-test-key"
GRACE_S = 1.0
# the drain bound (GRACE_S) plus releasing, closing the pool and the workers, on a loaded machine
EXIT_BOUND_S = GRACE_S + 20


@contextlib.contextmanager
def dripping_storage_server():
    """tests/storage_server.py as its own process, sending download bodies 16 bytes per 0.2 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.storage_server", "--port=0", f"--key={KEY}", "--drip=0.2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.kill()
        proc.wait(10)


async def stop_and_time(d, what: str) -> float:
    stopping = time.monotonic()
    d.signal(signal.SIGTERM)
    try:
        code = await d.wait_exit(EXIT_BOUND_S)
    except AssertionError:
        stopped = [e["event"] for e in d.lines() if e["event"] == "daemon_stopped"]
        raise AssertionError(
            f"{what}: still alive {EXIT_BOUND_S:g} s after SIGTERM (logged: {stopped}):\n"
            + d.log_text()
        ) from None
    assert code == 0, d.log_text()
    assert d.events("daemon_stopped")[0]["exit_code"] == 0
    return time.monotonic() - stopping


async def test_sigterm_with_a_named_pipe_for_an_object_exits(daemons, db: asyncpg.Connection):
    """The chaos case: a named pipe stood in for a hung mount. The job used to hang in its read,
    and after SIGTERM the process lived on past ``daemon_stopped`` until the read returned."""
    patient = uuid.uuid4()
    d = daemons.start("d", EMGD_SHUTDOWN_GRACE=GRACE_S, EMGD_DOWNLOAD_TIMEOUT=600)
    with fifo(daemons.storage / BUCKET / str(patient) / "pipe.c3d"):
        await d.wait_ready()
        session = await record_object(daemons.dsn, patient, f"{patient}/pipe.c3d")

        async def taken() -> bool:
            return (await job_of(db, session))["state"] != "pending"

        await wait_for(taken, timeout=30, what="the job to be claimed")
        await asyncio.sleep(0.5)
        await stop_and_time(d, "named pipe")
    assert not d.leftovers()
    job = await job_of(db, session)
    assert job["state"] == "failed" and "named pipe" in job["last_error"], dict(job)


async def test_sigterm_during_a_dripping_download_exits_within_the_drain_bound(
    daemons, db: asyncpg.Connection
):
    with dripping_storage_server() as url:
        storage_env = {
            "EMGD_STORAGE_BACKEND": "supabase",
            "EMGD_SUPABASE_URL": url,
            "EMGD_SUPABASE_SERVICE_ROLE_KEY": KEY,
        }
        # the deadline is far away: only the drain bound may end this download
        d = daemons.start(
            "d", EMGD_SHUTDOWN_GRACE=GRACE_S, EMGD_DOWNLOAD_TIMEOUT=600, **storage_env
        )
        await d.wait_ready()
        patient = await dbutil.make_user(db, "patient")
        settings = load_settings(
            database_url=daemons.dsn,
            storage_backend="supabase",
            supabase_url=url,
            supabase_service_role_key=KEY,
        )
        data = ghostly_recording(seed=21, duration_s=4.0)[0]  # ~100 KB: an hour at this pace
        session = await upload(settings, daemons.dsn, data, patient, "drip.c3d")
        await wait_job(db, session, timeout=30, state="running", stage="downloading")
        await asyncio.sleep(1.0)  # well inside the body
        took = await stop_and_time(d, "dripping download")
    assert took < EXIT_BOUND_S
    job = await job_of(db, session)
    # handed back untouched for another daemon: pending, the attempt not counted
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("pending", 0, None)
    assert [e["job_id"] for e in d.events("job_released")] == [job["id"]]
    await wait_for(lambda: not d.leftovers(), timeout=15, what="d's workers to exit")


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter that imports this checkout; its output captured."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_thread_stuck_in_the_kernel_cannot_hold_the_stopped_process(tmp_path):
    """The last resort, through the functions ``emgd run`` uses: an executor thread that never
    returns is given a few seconds, then the process ends with the daemon's exit code, saying
    which threads it left behind."""
    script = textwrap.dedent(
        """
        import asyncio, os, sys
        from daemon import logs
        from daemon.runtime import exit_if_threads_linger, run_loop

        logs.configure("json", "info")

        async def main():
            r, w = os.pipe()  # nobody ever writes: the read blocks in the kernel for good
            asyncio.get_running_loop().run_in_executor(None, os.read, r, 1)
            await asyncio.sleep(0.2)
            return 3

        code = run_loop(main(), thread_grace=0.5)
        exit_if_threads_linger(code)
        print("not reached", flush=True)
        """
    )
    started = time.monotonic()
    proc = run_python(script)
    assert time.monotonic() - started < 30
    assert proc.returncode == 3, proc.stderr
    assert "not reached" not in proc.stdout
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    (left,) = [e for e in events if e["event"] == "threads_left_behind"]
    assert left["exit_code"] == 3 and any("executor" in name for name in left["threads"])


def test_without_stuck_threads_the_process_exits_normally():
    script = textwrap.dedent(
        """
        import asyncio
        from daemon.runtime import exit_if_threads_linger, lingering_threads, run_loop

        async def main():
            await asyncio.to_thread(sum, [1, 2])
            return 0

        code = run_loop(main())
        assert not lingering_threads()
        exit_if_threads_linger(code)
        print("returned", code, flush=True)
        """
    )
    proc = run_python(script)
    assert (proc.returncode, proc.stdout.strip()) == (0, "returned 0"), proc.stderr
