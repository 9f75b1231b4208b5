"""The analysis pool: real worker processes that segfault, hang, eat memory or raise.

The daemon must survive each of them, keep serving the next job and keep its event loop free.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.isolation import (
    AnalysisError,
    AnalysisPool,
    AnalysisRejected,
    PoolError,
    WorkerCrashed,
    WorkerTimeout,
)
from tests.core.helpers import vendor_file

T = "tests.isolation_targets"


def pool(size: int = 1, *, timeout_s: float = 2.0, memory_mb: int = 256, target: str = "dispatch"):
    return AnalysisPool(
        size, timeout_s=timeout_s, memory_mb=memory_mb, target=f"{T}:{target}", preload=()
    )


@pytest.fixture
async def one():
    p = pool(1)
    await p.start()
    yield p
    await p.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


async def test_a_job_runs_in_another_process(one):
    result = await one.analyse(b"abc", name="p/a.c3d", options={"do": "works", "k": 1})
    assert result["name"] == "p/a.c3d" and result["size"] == 3
    assert result["options"] == {"do": "works", "k": 1}
    assert result["pid"] != os.getpid()


async def test_large_payload_round_trips_intact(one):
    data = os.urandom(1 << 20) * 24  # 24 MB, far above any pipe buffer
    result = await one.analyse(data, name="big", options={"do": "echo"})
    assert result["data"] == data


async def test_pool_survives_every_kind_of_failure_and_keeps_serving(one):
    async def ok_pid() -> int:
        return (await one.analyse(b"x", name="ok", options={"do": "works"}))["pid"]

    pid = await ok_pid()
    cases = [
        ("segfault", WorkerCrashed, "SIGSEGV", True),
        ("hang", WorkerTimeout, "longer than 2 s", True),
        ("allocate_10gb", WorkerCrashed, "memory limit (256 MB)", True),
        ("reject", AnalysisRejected, "is not a C3D file", False),
        ("bug", AnalysisRejected, "unexpected IndexError", False),
        ("exit_now", WorkerCrashed, "exited with code 3", True),
    ]
    for do, exc_type, text, replaced in cases:
        with pytest.raises(exc_type) as info:
            await one.analyse(b"\x00junk", name="bad.c3d", options={"do": do})
        assert text in str(info.value), do
        assert info.value.reason == str(info.value)
        new_pid = await ok_pid()
        assert (new_pid != pid) == replaced, do
        assert not replaced or not alive(pid), f"{do}: old worker still alive"
        pid = new_pid
    assert one.stats()["restarts"] == 4


async def test_rejection_carries_the_error_code(one):
    with pytest.raises(AnalysisRejected) as info:
        await one.analyse(b"Z", name="x.c3d", options={"do": "reject"})
    assert info.value.code == "c3d_format"
    assert str(info.value) == "x.c3d is not a C3D file (first byte b'Z')"
    assert isinstance(info.value, AnalysisError)


@pytest.mark.parametrize(
    ("sig", "text"), [("SIGKILL", "SIGKILL"), ("SIGABRT", "SIGABRT"), ("SIGBUS", "SIGBUS")]
)
async def test_death_by_signal_is_named(one, sig, text):
    with pytest.raises(WorkerCrashed, match=text):
        await one.analyse(b"x", name="x", options={"do": "kill_self", "signal": sig})
    assert (await one.analyse(b"x", name="x", options={"do": "works"}))["size"] == 1


async def test_numpy_allocation_beyond_the_limit_costs_one_job():
    p = AnalysisPool(1, timeout_s=10, memory_mb=512, target=f"{T}:dispatch", preload=("numpy",))
    await p.start()
    try:
        with pytest.raises(WorkerCrashed, match="memory limit"):
            await p.analyse(b"x", name="x", options={"do": "allocate_numpy_10gb"})
        assert (await p.analyse(b"x", name="x", options={"do": "works"}))["size"] == 1
    finally:
        await p.close()


async def test_event_loop_stays_responsive_during_a_hang():
    # A loop blocked by the hang would show one gap of the whole 2 s timeout; a loaded machine
    # only stretches the 10 ms ticks somewhat, so the bound sits at half the timeout.
    p = pool(1, timeout_s=2.0)
    await p.start()
    gaps: list[float] = []

    async def tick():
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        started = time.monotonic()
        with pytest.raises(WorkerTimeout):
            await p.analyse(b"x", name="x", options={"do": "hang"})
        elapsed = time.monotonic() - started
        # never early; the upper bound only tells "the timeout fired" from "hung for good"
        assert 1.9 < elapsed < 20.0, elapsed
    finally:
        ticker.cancel()
        await p.close()
    assert sum(gaps) > 1.9, "the ticker must have run through the whole hang"
    assert max(gaps) < 1.0, f"event loop stalled for {max(gaps) * 1000:.0f} ms"


async def test_jobs_run_concurrently_up_to_the_pool_size():
    p = pool(2, timeout_s=30.0)
    await p.start()
    try:
        results = await asyncio.gather(
            *(
                p.analyse(b"x", name=str(i), options={"do": "sleep", "seconds": 1.0})
                for i in range(4)
            )
        )
    finally:
        await p.close()
    assert [r["name"] for r in results] == ["0", "1", "2", "3"]
    assert len({r["pid"] for r in results}) == 2
    # From the workers' own clocks, not a wall-clock total a loaded machine can stretch: two
    # jobs overlap (both workers busy at once), never three (the pool size is the limit).
    running_at = [sum(o["started"] <= r["started"] < o["ended"] for o in results) for r in results]
    assert max(running_at) == 2, running_at


async def test_a_crash_does_not_disturb_a_neighbour_job():
    p = pool(2)
    await p.start()
    try:
        slow = asyncio.create_task(
            p.analyse(b"x", name="slow", options={"do": "sleep", "seconds": 0.5})
        )
        await asyncio.sleep(0.05)
        with pytest.raises(WorkerCrashed):
            await p.analyse(b"x", name="bad", options={"do": "segfault"})
        assert (await slow)["name"] == "slow"
    finally:
        await p.close()


async def test_cancelling_a_job_kills_its_worker_and_the_pool_recovers(one):
    pid = (await one.analyse(b"x", name="x", options={"do": "works"}))["pid"]
    task = asyncio.create_task(one.analyse(b"x", name="x", options={"do": "hang"}))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)
    assert (await one.analyse(b"x", name="x", options={"do": "works"}))["pid"] != pid


async def test_library_output_on_stdout_does_not_corrupt_replies(one):
    assert await one.analyse(b"x", name="x", options={"do": "prints"}) == {"ok": True}
    assert (await one.analyse(b"x", name="x", options={"do": "works"}))["size"] == 1


async def test_a_target_that_cannot_load_fails_start_clearly():
    p = AnalysisPool(1, timeout_s=1, memory_mb=256, target="tests.no_such_module:f", preload=())
    with pytest.raises(PoolError, match=r"could not load tests\.no_such_module:f.*ModuleNotFound"):
        await p.start()
    with pytest.raises(PoolError, match="closed"):
        await p.analyse(b"x", name="x", options={})


async def test_close_stops_every_worker():
    p = pool(2)
    await p.start()
    pids = [w.pid for w in p._all]
    busy = asyncio.create_task(p.analyse(b"x", name="x", options={"do": "hang"}))
    await asyncio.sleep(0.1)
    await p.close()
    with pytest.raises(AnalysisError):
        await busy
    await asyncio.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


PARENT = """
import asyncio, sys
from daemon.isolation import AnalysisPool
async def main():
    p = AnalysisPool(2, timeout_s=60, memory_mb=256, target="tests.isolation_targets:dispatch",
                     preload=())
    await p.start()
    print("PIDS", *(w.pid for w in p._all), flush=True)
    await p.analyse(b"x", name="x", options={"do": "hang"})
asyncio.run(main())
"""


def test_workers_die_with_a_killed_daemon():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        line = next(line for line in parent.stdout if line.startswith("PIDS"))
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == 2
        time.sleep(0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in pids), "worker outlived the daemon"
    finally:
        parent.kill()


async def test_default_target_analyses_a_real_c3d_file():
    path = vendor_file("Vicon.c3d")
    p = AnalysisPool(1, timeout_s=60, memory_mb=2048)
    await p.start()
    try:
        # emg_core analyses this vendor file (tests/core/test_c3d.py): so must the pool
        result = await p.analyse(path.read_bytes(), name="p/Vicon.c3d", options={})
        assert result["file"].endswith("Vicon.c3d") and result["channels"]
        with pytest.raises(AnalysisRejected):
            await p.analyse(b"not a c3d file", name="p/junk.c3d", options={})
        # damaged copies: each is analysed or rejected readably, none takes the worker down
        data = path.read_bytes()
        restarts = p.stats()["restarts"]
        damaged = [b"", data[:512], data[: len(data) // 2], data[:-1000]]
        for offset in (2, 3, 512 + 2, 1024 + 7):
            flipped = bytearray(data)
            flipped[offset] ^= 0xFF
            damaged.append(bytes(flipped))
        for blob in damaged:
            try:
                await p.analyse(blob, name="p/damaged.c3d", options={})
            except AnalysisRejected as exc:
                assert exc.code != "internal_error", exc
        assert p.stats()["restarts"] == restarts
    finally:
        await p.close()


async def test_close_releases_jobs_waiting_for_a_worker():
    p = pool(1)
    await p.start()
    busy = asyncio.create_task(p.analyse(b"x", name="x", options={"do": "hang"}))
    waiting = asyncio.create_task(p.analyse(b"x", name="y", options={"do": "works"}))
    await asyncio.sleep(0.1)
    await asyncio.wait_for(p.close(), 5)
    with pytest.raises(PoolError, match="closed"):
        await asyncio.wait_for(waiting, 2)
    with pytest.raises(AnalysisError):
        await busy


@pytest.mark.parametrize(("warmup", "warmed"), [(f"{T}:warm", True), (f"{T}:warm_badly", False)])
async def test_warm_up_runs_before_the_first_job_and_may_fail_harmlessly(warmup, warmed):
    p = AnalysisPool(1, timeout_s=2, memory_mb=256, target=f"{T}:works", preload=(), warmup=warmup)
    await p.start()
    try:
        assert (await p.analyse(b"x", name="x", options={}))["warmed"] is warmed
    finally:
        await p.close()


async def test_a_path_is_read_by_the_worker_not_the_daemon(one, tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "obj").write_bytes(data)
    result = await one.analyse(tmp_path / "obj", name="p/a.c3d", options={"do": "echo"})
    assert result["data"] == data
    # a file that vanished before the worker read it costs that job only
    with pytest.raises(AnalysisRejected, match="FileNotFoundError"):
        await one.analyse(tmp_path / "gone", name="p/b.c3d", options={"do": "works"})
    assert (await one.analyse(b"x", name="x", options={"do": "works"}))["size"] == 1


async def test_a_file_beyond_the_worker_memory_limit_costs_one_job(tmp_path):
    """The bytes of a path count against the worker's limit (EMGD_JOB_MEMORY_MB), not the
    daemon's memory: a file larger than the limit is a crash of that worker, replaced."""
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(400 << 20)  # sparse: no disk used, 400 MB to read
    p = pool(1, memory_mb=128, timeout_s=30)
    await p.start()
    try:
        with pytest.raises(WorkerCrashed, match=r"memory limit \(128 MB\)"):
            await p.analyse(big, name="p/big.c3d", options={"do": "works"})
        assert (await p.analyse(b"x", name="x", options={"do": "works"}))["size"] == 1
    finally:
        await p.close()


async def test_workers_start_without_the_daemon_s_secrets(monkeypatch):
    """The processes that parse untrusted files never see credentials, whatever their name."""
    secrets = {
        "SUPABASE_SERVICE_ROLE_KEY": "sk-canary-service-key",
        "EMGD_SUPABASE_SERVICE_ROLE_KEY": "sk-canary-service-key",
        "DATABASE_URL": "postgresql://emgd:canary-password@db/emgd",
        "EMGD_DATABASE_URL": "postgresql://emgd:canary-password@db/emgd",
        "PGPASSWORD": "canary-password",
        "AWS_SECRET_ACCESS_KEY": "canary-aws",
        "SOME_VENDOR_TOKEN": "canary-token",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("EMGD_TEST_ANALYSIS_DELAY", "0")
    p = pool(1)
    await p.start()
    try:
        seen = (await p.analyse(b"x", name="n", options={"do": "environment"}))["environ"]
    finally:
        await p.close()
    assert not set(secrets) & set(seen), sorted(set(secrets) & set(seen))
    assert not [v for v in seen.values() if "canary" in v]
    # what the interpreter and numeric libraries need, and emgd's own plain settings, remain
    assert seen["PATH"] == os.environ["PATH"] and seen["OMP_NUM_THREADS"] == "1"
    assert seen["EMGD_TEST_ANALYSIS_DELAY"] == "0"
