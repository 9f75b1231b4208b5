"""Every download ends: a named pipe where an object should be, a read stuck in the kernel, a
server that sends a few bytes a second. The job fails (or is retried) with a readable reason
within EMGD_DOWNLOAD_TIMEOUT instead of holding its lease and a slot forever."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from daemon import local, storage
from daemon.settings import load_settings
from daemon.storage import LocalStorage, StorageError, StorageUnavailable, SupabaseStorage
from tests import dbutil
from tests.daemon_harness import BUCKET, daemon_settings, running_daemon, wait_sessions
from tests.storage_server import start_storage_server

KEY = "test-service-role-key"


@contextlib.contextmanager
def fifo(path: Path):
    """A named pipe at ``path``; afterwards a writer opens and closes it, so a reader that got
    stuck on it (the defect) is released rather than left hanging in the test process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_named_pipe_is_refused_at_once(tmp_path):
    store = LocalStorage(tmp_path, download_timeout=30)
    with fifo(tmp_path / BUCKET / "p" / "pipe.c3d"):
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            await asyncio.wait_for(store.download(BUCKET, "p/pipe.c3d"), 10)
        assert time.monotonic() - started < 5
    assert not isinstance(info.value, StorageUnavailable)  # permanent: retrying cannot help
    assert str(info.value).startswith(f"{BUCKET}/p/pipe.c3d is a named pipe, not a regular file")


async def test_a_folder_named_like_the_object_is_not_found(tmp_path):
    (tmp_path / BUCKET / "p" / "dir.c3d").mkdir(parents=True)
    with pytest.raises(storage.ObjectNotFound):
        await LocalStorage(tmp_path).download(BUCKET, "p/dir.c3d")


async def test_a_read_stuck_in_the_kernel_ends_at_the_deadline(tmp_path, monkeypatch):
    """A hung mount: read() never returns. The download gives up at the deadline, and the thread
    left in the read is a daemon thread, which cannot keep the process alive."""
    (tmp_path / BUCKET / "p").mkdir(parents=True)
    (tmp_path / BUCKET / "p" / "hung.c3d").write_bytes(b"x" * 100)
    release = threading.Event()
    stuck: list[threading.Thread] = []

    real_read = storage._read_regular_file

    def hung_read(path, *args, **kwargs):
        if path.name != "hung.c3d":
            return real_read(path, *args, **kwargs)
        stuck.append(threading.current_thread())
        release.wait(60)
        raise StorageUnavailable("released by the test")

    monkeypatch.setattr(storage, "_read_regular_file", hung_read)
    store = LocalStorage(tmp_path, download_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            await asyncio.wait_for(store.download(BUCKET, "p/hung.c3d"), 10)
        assert 0.4 < time.monotonic() - started < 5
        assert str(info.value) == (
            f"downloading {BUCKET}/p/hung.c3d did not finish within 0.5 s"
            " (EMGD_DOWNLOAD_TIMEOUT); storage is hanging or too slow"
        )
        assert stuck and stuck[0].is_alive() and stuck[0].daemon
        # the stuck read holds its own thread only: the next downloads are read meanwhile
        (tmp_path / BUCKET / "p" / "fine.c3d").write_bytes(b"y" * 100)
        for _ in range(3):
            assert await asyncio.wait_for(store.download(BUCKET, "p/fine.c3d"), 5) == b"y" * 100
        assert stuck[0].is_alive()
    finally:
        release.set()


async def test_a_regular_file_still_reads_whole(tmp_path):
    data = os.urandom(3 << 20) + b"tail"  # several chunks
    store = LocalStorage(tmp_path, download_timeout=10)
    await store.upload(BUCKET, "p/big.c3d", data)
    assert await store.download(BUCKET, "p/big.c3d") == data


async def test_a_slow_drip_download_is_cut_at_the_deadline():
    data = os.urandom(64 << 10)  # 64 KB at 16 bytes per 50 ms: over three minutes
    server = await start_storage_server(key=KEY, objects={(BUCKET, "p/drip.c3d"): data})
    server.drip = 0.05
    # each read waits 50 ms, far below the per-read timeout: only a total deadline can stop it
    store = SupabaseStorage(server.url, KEY, timeout=5, retries=3, download_timeout=1.5)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match=r"did not finish within 1\.5 s"):
            await asyncio.wait_for(store.download(BUCKET, "p/drip.c3d"), 30)
        assert time.monotonic() - started < 6  # 1.5 s, with room for a loaded machine
        # a healthy server still serves the whole object
        server.drip = 0.0
        assert await store.download(BUCKET, "p/drip.c3d") == data
    finally:
        await store.aclose()
        await server.stop()


def test_the_deadline_is_a_setting(monkeypatch):
    monkeypatch.setenv("EMGD_DOWNLOAD_TIMEOUT", "7.5")
    settings = load_settings(database_url="postgresql://x/y", local_storage_dir="/tmp")
    assert settings.download_timeout == 7.5
    assert storage.make_storage(settings).download_timeout == 7.5


# -- the daemon --------------------------------------------------------------------------------


async def record_object(dsn: str, patient: uuid.UUID, name: str) -> str:
    """The storage.objects row Supabase Storage inserts, for an object placed by hand."""
    conn = await dbutil.connect(dsn)
    try:
        meta = {"size": 1000, "mimetype": "application/octet-stream"}
        return str(await local.record_object(conn, BUCKET, name, patient, meta))
    finally:
        await conn.close()


async def test_a_named_pipe_object_fails_its_job_within_the_deadline(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "s", download_timeout=5.0)
    patient = uuid.uuid4()
    name = f"{patient}/pipe.c3d"
    conn = await dbutil.connect(db_url)
    try:
        with fifo(tmp_path / "s" / BUCKET / str(patient) / "pipe.c3d"):
            async with running_daemon(settings, db_url) as d:
                started = time.monotonic()
                sid = await record_object(db_url, patient, name)
                rows = await wait_sessions(conn, [sid], timeout=30, daemon=d)
                took = time.monotonic() - started
        row = rows[sid]
        assert (row["status"], row["job_state"], row["attempts"]) == ("failed", "failed", 1)
        assert row["error"] == "The file of this recording could not be read from storage."
        assert row["last_error"] == (
            f"{BUCKET}/{name} is a named pipe, not a regular file; refusing to read it"
            " (a stored object is always a plain file)"
        )
        assert took < 15, took
    finally:
        await conn.close()
