"""The daemon's memory does not grow with file size times concurrency: each download streams to a
file of its own job, the analysis worker reads that file, and the file goes when the job ends.
Two 300 MB uploads in flight at once used to take the daemon to 800 MB; now it stays near its
idle size. (The workers hold the bytes, within their own limit, EMGD_JOB_MEMORY_MB.)"""

from __future__ import annotations

import os

import psutil
import pytest

from tests.e2e_harness import Daemons, peak_rss_while_running, wait_job
from tests.isolation_targets import SLOW_MARKER
from tests.test_e2e_processes import put

pytestmark = pytest.mark.e2e

MB = 1 << 20


async def test_two_300_mb_files_in_flight_leave_the_daemon_flat(daemons: Daemons, db, patient):
    downloads = daemons.workdir / "downloads"
    downloads.mkdir()
    d = await daemons.start_ready(
        "d",
        EMGD_ANALYSIS_TARGET="tests.isolation_targets:real_or_misbehave",
        EMGD_CONCURRENCY=2,
        EMGD_MAX_FILE_MB=700,
        EMGD_JOB_MEMORY_MB=1024,
        EMGD_DOWNLOAD_DIR=downloads,
        EMGD_LEASE_SECONDS=60,
    )
    proc = psutil.Process(d.pid)
    idle = proc.memory_info().rss
    chunk = os.urandom(MB)
    sessions = []
    for i in range(2):
        # the worker sleeps 4 s on the marker, then finds no C3D after it: fails, permanently
        big = SLOW_MARKER + b"4\n" + chunk * 300
        sessions.append(await put(daemons, patient, big, f"big-{i}.c3d"))
        del big

    def downloads_on_disk() -> None:
        # while both run, their downloads are on disk, not in the daemon
        files = [p for p in downloads.rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in files) <= 2 * (300 * MB + 64)

    peak, both = await peak_rss_while_running(
        db, proc, sessions, peak=idle, while_all_run=downloads_on_disk
    )
    assert both, "the two jobs were never in flight together"
    for sid in sessions:
        await wait_job(db, sid, timeout=30, state="failed")
    assert peak <= 250 * MB, f"daemon RSS peaked at {peak / MB:.0f} MB (idle {idle / MB:.0f} MB)"
    # each job's file went with the job (the daemon's folder stays until it stops)
    assert [p for p in downloads.rglob("*") if not p.is_dir()] == []


def test_a_killed_daemons_download_folders_are_swept_at_the_next_start(tmp_path):
    """A daemon's download folder goes with the daemon; one left by a daemon killed
    mid-download is removed when a daemon on the same host starts, while a live process's
    folder stays."""
    import socket
    import subprocess
    import sys

    from daemon.jobs import sweep_dead_downloads

    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    left = tmp_path / f"emgd-job-{host}-{dead.stdout.strip()}-abc"
    live = tmp_path / f"emgd-job-{host}-{os.getpid()}-def"
    other_host = tmp_path / f"emgd-job-elsewhere-{dead.stdout.strip()}-ghi"
    for folder in (left, live, other_host):
        folder.mkdir()
        (folder / "object.c3d").write_bytes(b"x" * 100)
    assert sweep_dead_downloads(tmp_path) == 1
    assert not left.exists() and live.exists() and other_host.exists()
