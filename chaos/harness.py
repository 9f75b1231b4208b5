"""What every chaos scenario shares: the database (migrated, with a completion log), daemon
processes, uploads of known recordings, and the accounting that says whether each upload was
completed exactly once with the results a clean run gives.

Uploads go where Supabase Storage puts them: the bytes into the storage folder the daemons read
(the local backend), the row into ``storage.objects``, whose trigger queues the job. Each upload is
one of a few synthetic GHOSTLY recordings, made unique (so it is really analysed, never copied
from an identical one) by the analysis target's delay marker: ``EMGD-TEST-SLOW:<seconds>``, with
digits that differ per upload. The expected results of each recording come from analysing it once
in this process: a session is right when its rows match those counts.

``chaos.completions`` records, in the same transaction, every time a job becomes ``succeeded``:
two rows for one object version is a job completed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from daemon import local
from daemon.storage import object_metadata
from tests.e2e_harness import DaemonProcess, Daemons

TARGET = "tests.isolation_targets:real_or_misbehave"
BUCKET = "c3d-examples"
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)

COMPLETION_LOG = """
create schema if not exists chaos;
create table if not exists chaos.completions (
    id bigint generated always as identity primary key,
    session_id uuid not null,
    object_version text,
    owner uuid,
    at timestamptz not null default clock_timestamp()
);
create or replace function chaos.log_completion() returns trigger language plpgsql as $$
begin
    insert into chaos.completions (session_id, object_version, owner)
    values (new.session_id, new.object_version, old.lease_owner);
    return null;
end $$;
drop trigger if exists zz_chaos_completion on emgd.jobs;
create trigger zz_chaos_completion after update on emgd.jobs
    for each row when (new.state = 'succeeded' and old.state is distinct from 'succeeded')
    execute function chaos.log_completion();
"""


def recordings(n: int = 4) -> list[tuple[bytes, dict[str, int]]]:
    """``n`` short recordings and what a clean analysis of each stores (rows per table)."""
    from daemon.isolation import analyze_to_dict
    from emg_core.synthetic import ghostly_recording

    made = []
    for seed in range(n):
        data, _ = ghostly_recording(seed=100 + seed, duration_s=3.0)
        result = analyze_to_dict(data, "clean.c3d", {})
        contractions = sum(len(c.get("contractions") or []) for c in result["channels"])
        made.append((data, {"parameters": len(result["channels"]), "contractions": contractions}))
    return made


@dataclass
class Upload:
    session_id: str
    recording: int
    name: str
    at: float


@dataclass
class World:
    """One chaos run: database, storage folder, daemons, and every upload made."""

    dsn: str
    workdir: Path
    recs: list[tuple[bytes, dict[str, int]]]
    daemons: Daemons = field(init=False)
    uploads: list[Upload] = field(default_factory=list)
    patients: list[uuid.UUID] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids the harness ended on purpose
    _seq: int = 0

    def __post_init__(self) -> None:
        self.daemons = Daemons(self.dsn, self.workdir)

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(COMPLETION_LOG)
            for _ in range(4):
                patient = uuid.uuid4()
                await conn.fetchval(local.ENSURE_LOCAL_PATIENT, patient)
                self.patients.append(patient)
        finally:
            await conn.close()

    # -- daemons

    def start(self, name: str, **env: Any) -> DaemonProcess:
        settings = {
            "EMGD_ANALYSIS_TARGET": TARGET,
            "EMGD_LEASE_SECONDS": "30",
            "EMGD_POLL_INTERVAL": "1",
            "EMGD_CONCURRENCY": "2",
            "EMGD_SHUTDOWN_GRACE": "5",
            "EMGD_JOB_TIMEOUT": "60",
            "EMGD_JOB_MEMORY_MB": "1024",
        }
        settings.update({k: str(v) for k, v in env.items()})
        return self.daemons.start(name, **settings)

    def kill(self, d: DaemonProcess, sig: int = 9) -> None:
        self.killed.add(d.pid)
        d.signal(sig)

    def unexpected_exits(self) -> list[dict[str, Any]]:
        """Daemons that ended without the harness ending them (a crash is a daemon exit)."""
        return [
            {"daemon": d.name, "code": d.proc.returncode}
            for d in self.daemons.started
            if d.proc.poll() is not None and d.pid not in self.killed
        ]

    async def stop_all(self) -> None:
        for d in self.daemons.started:
            if d.proc.poll() is None:
                self.killed.add(d.pid)
                with contextlib.suppress(AssertionError):
                    await d.stop(timeout=30)
        self.daemons.close()

    # -- uploads

    async def upload(
        self, n: int, *, delay: float = 0.0, conn: asyncpg.Connection | None = None
    ) -> list[Upload]:
        """``n`` uploads, each analysed for real after ``delay`` seconds in the worker."""
        own = conn is None
        conn = conn or await asyncpg.connect(self.dsn)
        made = []
        try:
            for _ in range(n):
                self._seq += 1
                k = self._seq % len(self.recs)
                patient = self.patients[self._seq % len(self.patients)]
                # unique bytes: the delay's digits carry the upload's number
                marker = f"EMGD-TEST-SLOW:{delay:.3f}{self._seq:09d}\n".encode()
                data = marker + self.recs[k][0]
                name = f"{patient}/u{self._seq:06d}-r{k}.c3d"
                path = self.daemons.storage / BUCKET / name
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".part")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                sid = await local.record_object(
                    conn, BUCKET, name, patient, object_metadata(data, "application/octet-stream")
                )
                made.append(Upload(str(sid), k, name, time.monotonic()))
        finally:
            if own:
                await conn.close()
        self.uploads.extend(made)
        return made

    # -- accounting

    async def settle(self, uploads: list[Upload], timeout: float) -> dict[str, int]:
        """Wait until every upload is final (or ``timeout``), then count the outcomes."""
        ids = [u.session_id for u in uploads]
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(*DB_ERRORS):
                conn = await asyncpg.connect(self.dsn, timeout=5)
                try:
                    open_ = await conn.fetchval(
                        "select count(*) from emgd.jobs where session_id = any($1::uuid[])"
                        " and state in ('pending', 'running')",
                        ids,
                    )
                finally:
                    await conn.close()
                if open_ == 0:
                    break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        return await self.account(uploads)

    async def account(self, uploads: list[Upload]) -> dict[str, int]:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                """
                select s.id::text as id, j.state, j.last_error,
                       (select count(*) from chaos.completions c
                        where c.session_id = s.id) as completions,
                       (select count(*) from public.session_parameters p
                        where p.session_id = s.id) as parameters,
                       (select count(*) from public.contractions c
                        where c.session_id = s.id) as contractions
                from public.sessions s join emgd.jobs j on j.session_id = s.id
                where s.id = any($1::uuid[])
                """,
                [u.session_id for u in uploads],
            )
        finally:
            await conn.close()
        by_id = {r["id"]: r for r in rows}
        counts = {"uploads": len(uploads), "completed_exactly_once": 0, "lost": 0}
        counts.update({"duplicated": 0, "wrong_results": 0, "failed": 0})
        failures: list[str] = []
        for u in uploads:
            r = by_id.get(u.session_id)
            if r is None or r["state"] in ("pending", "running"):
                counts["lost"] += 1
                continue
            if r["state"] != "succeeded":
                counts["failed"] += 1
                failures.append(str(r["last_error"])[:160])
                continue
            if r["completions"] > 1:
                counts["duplicated"] += 1
            expected = self.recs[u.recording][1]
            if (r["parameters"], r["contractions"]) != (
                expected["parameters"],
                expected["contractions"],
            ):
                counts["wrong_results"] += 1
            elif r["completions"] == 1:
                counts["completed_exactly_once"] += 1
        if failures:
            counts["failure_reasons"] = sorted(set(failures))[:5]  # type: ignore[assignment]
        return counts


async def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` (sync or async) is truthy, or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        await asyncio.sleep(interval)
    return None


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 3),
        "max": round(ordered[-1], 3),
    }
