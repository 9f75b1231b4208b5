"""The chaos scenarios. Each takes the run's ``World`` (and the cluster it may break), does its
damage to real daemon processes, and returns its figures; ``chaos.__main__`` adds them up."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import time
import uuid
from typing import Any

import asyncpg
import psutil

from chaos.cluster import Cluster
from chaos.harness import BUCKET, DB_ERRORS, Upload, World, stats, wait_until
from daemon import local, queue
from daemon.storage import object_metadata
from tests.e2e_harness import peak_rss_while_running

RUNNING_OF = "select id from emgd.jobs where state = 'running' and lease_owner = $1"


async def _ready(*daemons) -> None:
    await asyncio.gather(*(d.wait_ready(timeout=90) for d in daemons))


async def _any_ready(fleet) -> bool:
    for d in fleet:
        with contextlib.suppress(Exception):
            status, _ = await d.get("/readyz")
            if status == 200:
                return True
    return False


async def _completions(dsn: str) -> int | None:
    with contextlib.suppress(*DB_ERRORS):
        conn = await asyncpg.connect(dsn, timeout=2)
        try:
            return await conn.fetchval("select count(*) from chaos.completions")
        finally:
            await conn.close()
    return None


async def kill9(world: World, kills: int, daemons: int = 3) -> dict[str, Any]:
    """``kills`` times: a daemon holding jobs is killed with SIGKILL while new uploads keep
    coming; a replacement starts. Measures how long its orphans wait to run again."""
    # One slot each: a replacement starts one worker, so the fleet is back sooner on 2 cores.
    one = {"EMGD_CONCURRENCY": "1"}
    fleet = [world.start(f"kill-{i}", **one) for i in range(daemons)]
    await _ready(*fleet)
    # For its first 15 s a server cannot tell a dead owner from one that has not taken its lock
    # again yet (emgd.rescue_expired): orphans then wait for their lease. Measure the steady state.
    conn = await asyncpg.connect(world.dsn)
    try:
        young = await conn.fetchval(
            "select greatest(0, 16 - extract(epoch from now() - pg_postmaster_start_time()))"
        )
    finally:
        await conn.close()
    await asyncio.sleep(float(young))
    uploads: list[Upload] = []
    rescue: list[float] = []
    rerun_s: list[float] = []
    why: list[str] = []
    unrescued = 0
    conn = await asyncpg.connect(world.dsn)
    try:
        for i in range(kills):
            victim = fleet[i % daemons]
            # The victim must be up (to hold jobs), and so must one survivor at least: a
            # supervisor's replacement may still be starting, but a fleet where every survivor is
            # still importing numpy measures start-up, not rescue.
            await victim.wait_ready(timeout=90)
            survivors = [d for d in fleet if d is not victim]
            await wait_until(lambda s=survivors: _any_ready(s), timeout=90, interval=0.1)
            owner = victim.owner
            uploads += await world.upload(daemons, delay=0.8, conn=conn)

            async def holds(owner: uuid.UUID = owner) -> list[int]:
                return [r["id"] for r in await conn.fetch(RUNNING_OF, owner)]

            await wait_until(holds, timeout=5)
            orphans = await holds()
            world.kill(victim)
            killed_at = time.monotonic()
            fleet[i % daemons] = world.start(f"kill-{i}-r", **one)
            if not orphans:
                continue

            async def left(ids: list[int] = orphans, owner: uuid.UUID = owner) -> bool:
                # rescued: no longer held by the dead owner
                return not await conn.fetchval(
                    "select count(*) from emgd.jobs where id = any($1::bigint[])"
                    " and lease_owner = $2",
                    ids,
                    owner,
                )

            async def rerun(ids: list[int] = orphans, owner: uuid.UUID = owner) -> bool:
                # run again: claimed by a live owner, or already finished by one
                return not await conn.fetchval(
                    "select count(*) from emgd.jobs where id = any($1::bigint[])"
                    " and (state = 'pending' or lease_owner = $2)",
                    ids,
                    owner,
                )

            if await wait_until(left, timeout=60, interval=0.02) is None:
                unrescued += 1
                continue
            rescue.append(time.monotonic() - killed_at)
            why.append(
                await conn.fetchval(
                    "select string_agg(distinct coalesce(last_error, state), '; ')"
                    " from emgd.jobs where id = any($1::bigint[])",
                    orphans,
                )
            )
            if await wait_until(rerun, timeout=60, interval=0.02) is not None:
                rerun_s.append(time.monotonic() - killed_at)
    finally:
        await conn.close()
    counts = await world.settle(uploads, timeout=120)
    return {
        **counts,
        "kills": kills,
        "orphan_rescue_s": rescue,
        "orphan_rerun_s": rerun_s,
        "orphans_never_rescued": unrescued,
        "per_kill": [round(x, 2) for x in rescue],
        "per_kill_rerun": [round(x, 2) for x in rerun_s],
        "rescue_reasons": sorted(set(why)),
    }


async def outages(
    world: World, cluster: Cluster, restarts: int, crashes: int, daemons: int = 2
) -> dict[str, Any]:
    """PostgreSQL restarted (-m fast) ``restarts`` times and crashed (-m immediate) ``crashes``
    times under load. Measures how soon the first job completes after the server is back."""
    fleet = [world.start(f"outage-{i}") for i in range(daemons)]
    await _ready(*fleet)
    uploads: list[Upload] = []
    resume: list[float] = []
    undone = 0
    plan = ["restart"] * restarts + ["crash"] * crashes
    for kind in plan:
        uploads += await world.upload(16, delay=0.4)
        await asyncio.sleep(0.6)  # jobs are mid-flight: claims, analyses, commits
        if kind == "crash":
            # crash right after a result is acknowledged: a completion whose commit did not
            # wait for its WAL flush would be gone after the crash
            base = await _completions(world.dsn)
            await wait_until(lambda base=base: _grew(world.dsn, base), timeout=10, interval=0.005)
        seen = await _succeeded(world.dsn)  # acknowledged: must survive what comes next
        if kind == "restart":
            await asyncio.to_thread(cluster.restart)
        else:
            await asyncio.to_thread(cluster.crash)
            await asyncio.to_thread(cluster.start)
        undone += len(seen - await _succeeded(world.dsn))
        back = await _completions(world.dsn)
        took = await wait_until(lambda back=back: _grew(world.dsn, back), timeout=60, interval=0.02)
        resume.append(float("inf") if took is None else took)
        await asyncio.sleep(0.5)
    counts = await world.settle(uploads, timeout=120)
    return {
        **counts,
        "restarts": restarts,
        "crashes": crashes,
        "completions_undone_by_outage": undone,
        "resume_after_outage_s": resume,
    }


async def _succeeded(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("select session_id::text from emgd.jobs where state = 'succeeded'")
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def _grew(dsn: str, baseline: int | None) -> bool:
    now = await _completions(dsn)
    return now is not None and baseline is not None and now > baseline


async def listener_termination(world: World) -> dict[str, Any]:
    """The LISTEN connections are terminated server-side: daemons reconnect, uploads still run."""
    fleet = [world.start(f"listen-{i}") for i in range(2)]
    await _ready(*fleet)
    conn = await asyncpg.connect(world.dsn)
    try:
        ended = await conn.fetchval(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity"
            " where datname = current_database() and pid <> pg_backend_pid()"
            "   and (query ilike 'listen%' or query = $1)",
            queue.NOTIFY,
        )
    finally:
        await conn.close()
    uploads = await world.upload(6)
    started = time.monotonic()
    counts = await world.settle(uploads, timeout=60)
    return {**counts, "listeners_terminated": ended, "completed_in_s": time.monotonic() - started}


async def full_disk(world: World, cluster: Cluster) -> dict[str, Any]:
    """The disk holding the results tables fills up while jobs commit, then is freed: jobs wait
    (database unavailable, retried) instead of failing, and complete once space returns."""
    disk = cluster.small_disk(48)
    space = disk / "ts"
    space.mkdir()
    os.chown(space, *_owner(disk))
    conn = await asyncpg.connect(world.dsn)
    try:
        await conn.execute(f"create tablespace chaos_small location '{space}'")
        for table in ("public.contractions", "public.session_parameters"):
            await conn.execute(f"alter table {table} set tablespace chaos_small")
            for idx in await conn.fetch(
                "select indexrelid::regclass::text as name from pg_index"
                " where indrelid = $1::regclass",
                table,
            ):
                await conn.execute(f"alter index {idx['name']} set tablespace chaos_small")
    finally:
        await conn.close()
    fleet = [world.start("disk-0")]
    await _ready(*fleet)
    filler = disk / "filler"
    _fill(filler)
    uploads = await world.upload(4)
    await asyncio.sleep(6.0)
    conn = await asyncpg.connect(world.dsn)
    try:
        during = await conn.fetch(
            "select state, attempts, last_error from emgd.jobs where session_id = any($1::uuid[])",
            [u.session_id for u in uploads],
        )
    finally:
        await conn.close()
    filler.unlink()
    freed = time.monotonic()
    counts = await world.settle(uploads, timeout=90)
    return {
        **counts,
        "failed_while_full": sum(r["state"] == "failed" for r in during),
        "retried_while_full": sum(
            "database unavailable" in (r["last_error"] or "") for r in during
        ),
        "completed_after_freeing_s": round(time.monotonic() - freed, 2),
    }


def _owner(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def _fill(path) -> None:
    block = b"\0" * (1 << 20)
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


async def hung_read(world: World) -> dict[str, Any]:
    """Storage sends headers, then a few bytes a second: the download ends at its deadline and
    the job is retried; SIGTERM during such a read ends the process within the grace period."""
    from tests.storage_server import StorageServer

    key = "chaos-service-key"
    server = await StorageServer(key=key, drip=0.5, drip_bytes=16).start()
    env = {
        "EMGD_STORAGE_BACKEND": "supabase",
        "SUPABASE_URL": server.url,
        "SUPABASE_SERVICE_ROLE_KEY": key,
        "EMGD_DOWNLOAD_TIMEOUT": "3",
        "EMGD_STORAGE_TIMEOUT": "2",
        "EMGD_SHUTDOWN_GRACE": "3",
    }
    out: dict[str, Any] = {}
    try:
        d = world.start("hung-0", **env)
        await _ready(d)
        upload = await _upload_to(world, server)
        conn = await asyncpg.connect(world.dsn)
        try:
            claimed = await wait_until(lambda: _state(conn, upload, "running"), 30, 0.02)
            t0 = time.monotonic()
            retried = await wait_until(
                lambda: _state(conn, upload, "pending", "did not finish within"), 30, 0.02
            )
            out["retried_after_s"] = None if retried is None else round(retried, 2)
            out["claimed"] = claimed is not None
            # the retry hangs again: stop the daemon in the middle of it
            await wait_until(lambda: _state(conn, upload, "running"), 30, 0.02)
            await asyncio.sleep(0.5)
            world.killed.add(d.pid)
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            code = await d.wait_exit(timeout=60)
            out["sigterm_exit_s"] = round(time.monotonic() - t0, 2)
            out["sigterm_exit_code"] = code
            out["processes_left"] = len(d.leftovers())
            out["released"] = await _state(conn, upload, "pending")
        finally:
            await conn.close()
        server.drip = 0.0  # storage recovers: the job completes
        healthy = world.start("hung-1", **env)
        await _ready(healthy)
        out.update(await world.settle([upload], timeout=60))
    finally:
        await server.stop()
    return out


async def _upload_to(world: World, server) -> Upload:
    k = 0
    data = b"EMGD-TEST-SLOW:0.000777\n" + world.recs[k][0]
    patient = world.patients[0]
    name = f"{patient}/hung-{uuid.uuid4().hex[:8]}-r{k}.c3d"
    server.objects[(BUCKET, name)] = data
    conn = await asyncpg.connect(world.dsn)
    try:
        sid = await local.record_object(
            conn, BUCKET, name, patient, object_metadata(data, "application/octet-stream")
        )
    finally:
        await conn.close()
    up = Upload(str(sid), k, name, time.monotonic())
    world.uploads.append(up)
    return up


async def _state(conn, upload: Upload, state: str, error: str = "") -> bool:
    row = await conn.fetchrow(
        "select state, last_error from emgd.jobs where session_id = $1::uuid", upload.session_id
    )
    return row["state"] == state and error in (row["last_error"] or "")


async def sigstop(world: World) -> dict[str, Any]:
    """A daemon frozen (SIGSTOP) past its lease while analysing, then resumed: another daemon
    ran the job meanwhile; the resumed one must write nothing."""
    fleet = [world.start(f"stop-{i}", EMGD_LEASE_SECONDS="3") for i in range(2)]
    await _ready(*fleet)
    (upload,) = await world.upload(1, delay=4.0)
    conn = await asyncpg.connect(world.dsn)
    try:

        async def owner() -> uuid.UUID | None:
            return await conn.fetchval(
                "select lease_owner from emgd.jobs where session_id = $1::uuid and"
                " state = 'running'",
                upload.session_id,
            )

        await wait_until(owner, 30, 0.02)
        first = await owner()
        frozen = next(d for d in fleet if d.owner == first)
        frozen.signal(signal.SIGSTOP)
        taken = await wait_until(
            lambda: _owned_by_other(conn, upload, first), timeout=30, interval=0.02
        )
        await world.settle([upload], timeout=30)
        frozen.signal(signal.SIGCONT)
        await asyncio.sleep(6.0)  # its analysis ends and it tries to save
        writes = await conn.fetch(
            "select owner from chaos.completions where session_id = $1::uuid", upload.session_id
        )
    finally:
        await conn.close()
    counts = await world.account([upload])
    return {
        **counts,
        "taken_over_after_s": None if taken is None else round(taken, 2),
        "writes_by_frozen_daemon": sum(w["owner"] == first for w in writes),
        "frozen_daemon_alive": frozen.proc.poll() is None,
    }


async def _owned_by_other(conn, upload: Upload, first: uuid.UUID) -> bool:
    owner = await conn.fetchval(
        "select lease_owner from emgd.jobs where session_id = $1::uuid", upload.session_id
    )
    return owner is not None and owner != first


async def load(world: World, uploads: int, daemons: int = 4) -> dict[str, Any]:
    fleet = [world.start(f"load-{i}") for i in range(daemons)]
    await _ready(*fleet)
    started = time.monotonic()
    made = await world.upload(uploads)
    counts = await world.settle(made, timeout=400)
    took = time.monotonic() - started
    return {**counts, "daemons": daemons, "seconds": round(took, 1), "jobs_per_s": uploads / took}


async def rss(world: World, size_mb: int = 300) -> dict[str, Any]:
    """Two files of ``size_mb`` in flight at once: the daemon's own memory stays flat (the bytes
    go to a file and the workers read them), whatever the file sizes."""
    d = world.start(
        "rss-0",
        EMGD_CONCURRENCY="2",
        EMGD_MAX_FILE_MB=str(size_mb * 2),
        EMGD_JOB_MEMORY_MB=str(size_mb * 3),
    )
    await _ready(d)
    proc = psutil.Process(d.pid)
    conn = await asyncpg.connect(world.dsn)
    peak = proc.memory_info().rss
    try:
        made = []
        for i in range(2):
            patient = world.patients[i]
            name = f"{patient}/big-{i}-{uuid.uuid4().hex[:6]}.c3d"
            path = world.daemons.storage / BUCKET / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(b"EMGD-TEST-SLOW:3\n")
                chunk = os.urandom(1 << 20)
                for _ in range(size_mb):
                    fh.write(chunk)
            metadata = {"size": path.stat().st_size, "mimetype": "application/octet-stream"}
            made.append(await local.record_object(conn, BUCKET, name, patient, metadata))
        peak, both_running = await peak_rss_while_running(conn, proc, made, peak=peak)
        for p in made:
            path = None
            with contextlib.suppress(Exception):
                name = await conn.fetchval(
                    "select object_name from public.sessions where id = $1", p
                )
                path = world.daemons.storage / BUCKET / name
            if path is not None:
                path.unlink(missing_ok=True)
    finally:
        await conn.close()
    world.killed.add(d.pid)
    await d.stop()
    return {"peak_rss_mb": round(peak / 2**20, 1), "both_in_flight": both_running}


__all__ = [
    "full_disk",
    "hung_read",
    "kill9",
    "listener_termination",
    "load",
    "outages",
    "rss",
    "sigstop",
    "stats",
]
