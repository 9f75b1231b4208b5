"""The server's CPU per job for each step of the daemon's job path, against the floor's.

``bench_daemon.py`` measures the whole daemon, where the daemon's process, its server processes
and the machine's other work share two cores and every figure moves with the others. This one
drives the job functions from one connection, step by step over the same jobs, and reads that
connection's server process's CPU from /proc around each step: what each step costs the
database, with nothing else in the figure.

Each round queues ``--jobs`` uploads (the trigger makes their sessions and jobs), then:

- ``floor``: the minimal loop of ``bench_daemon.py`` itself (a batch-10 ``SKIP LOCKED`` claim,
  then one lease-fenced update to succeeded per job, on its 4 connections), over as many jobs of
  their own; the CPU of its 4 server processes;
- ``claim``, ``reuse_or_stage`` (the patient's options read, then the reuse check or the
  "analysing" stage), ``complete``: the daemon's statements, in batches of ``--batch`` jobs as
  its Batcher sends them, with the no-op analysis result of ``bench_daemon.py`` (one channel).

The server must run on this machine (its processes' /proc entries are read). PostgreSQL: as
``bench_daemon.py`` finds it. Usage: ``.venv/bin/python bench/bench_steps.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_daemon import (
    BackendCpu,
    bench_database,
    bench_server,
    checkpoint,
    floor_loop,
    make_patient,
    queue_jobs,
    tiny_result,
)
from common import emit, machine

from daemon import queue as q
from daemon.queue import Stage

STEPS = ("claim", "reuse_or_stage", "complete")
SIZE = 1024  # bytes the files are said to hold (each has its own content hash: no reuse)


class ServerElsewhere(Exception):
    """The server's processes are not on this machine: their CPU cannot be read."""


class Meter:
    """CPU seconds of one connection's server process, per step, in ms per job."""

    def __init__(self, conn, jobs: int) -> None:
        self.pid, self.jobs = conn.get_server_pid(), jobs
        if BackendCpu.read(self.pid) is None:
            raise ServerElsewhere
        self.figures: dict[str, float] = {}

    def start(self) -> None:
        self._at = BackendCpu.read(self.pid)

    def stop(self, step: str) -> None:
        self.figures[step] = 1000 * (BackendCpu.read(self.pid) - self._at) / self.jobs


async def one_round(
    conn, dsn: str, patient: uuid.UUID, tag: str, jobs: int, batch: int
) -> dict[str, float]:
    meter = Meter(conn, jobs)
    await queue_jobs(
        conn, None, patient, [f"{patient}/steps-floor-{tag}-{i}.c3d" for i in range(jobs)]
    )
    await checkpoint(conn)
    done, _, floor_server_s = await floor_loop(dsn)
    if done != jobs or floor_server_s is None:
        raise RuntimeError(f"floor loop: {done} of {jobs} jobs")
    meter.figures["floor"] = 1000 * floor_server_s / jobs

    await queue_jobs(conn, None, patient, [f"{patient}/steps-{tag}-{i}.c3d" for i in range(jobs)])
    await checkpoint(conn)
    owner = uuid.uuid4()
    result = tiny_result()
    claimed: list[Any] = []
    meter.start()
    while len(claimed) < jobs and (rows := await conn.fetch(q.CLAIM_JOBS, owner, batch, 60.0)):
        claimed += rows
    meter.stop("claim")
    if len(claimed) != jobs:
        raise RuntimeError(f"claimed {len(claimed)} of {jobs} jobs")
    batches = [claimed[i : i + batch] for i in range(0, jobs, batch)]

    def digest(row) -> str:
        return hashlib.sha256(str(row["session_id"]).encode()).hexdigest()

    options: dict[int, dict[str, Any]] = {}
    meter.start()
    for b in batches:
        rows = await conn.fetch(
            q.OPTIONS_REUSE_OR_STAGE_MANY,
            [r["job_id"] for r in b],
            [r["lease_token"] for r in b],
            [digest(r) for r in b],
            [SIZE] * len(b),
            "{}",
            result["analysis_version"],
            Stage.ANALYSING.value,
            Stage.ANALYSING.progress,
        )
        if any(row["verdict"] != "staged" for row in rows):
            raise RuntimeError(f"reuse_or_stage: {[dict(row) for row in rows]}")
        for row in rows:
            options[b[row["n"] - 1]["job_id"]] = json.loads(row["options"])
    meter.stop("reuse_or_stage")

    payloads = {
        r["job_id"]: json.dumps(
            {**result, "processing": {**result["processing"], "options": options[r["job_id"]]}}
        )
        for r in claimed
    }
    meter.start()
    for b in batches:
        rows = await conn.fetch(
            q.COMPLETE_JOBS,
            [r["job_id"] for r in b],
            [r["lease_token"] for r in b],
            [payloads[r["job_id"]] for r in b],
            [digest(r) for r in b],
            [SIZE] * len(b),
        )
        if not all(row["ok"] for row in rows):
            raise RuntimeError(f"complete: {[dict(row) for row in rows]}")
    meter.stop("complete")
    return meter.figures


async def run(args) -> int:
    import asyncpg

    report: dict[str, Any] = {"benchmark": "steps", "machine": machine(), "rounds": []}
    async with bench_server() as (server_url, where), bench_database(server_url) as url:
        report["database"] = where
        conn = await asyncpg.connect(url)
        try:
            patient = await make_patient(conn)
            for r in range(args.rounds):
                figures = await one_round(conn, url, patient, str(r), args.jobs, args.batch)
                report["rounds"].append(figures)
                print(f"# round {r + 1}: " + json.dumps(figures), file=sys.stderr, flush=True)
        except ServerElsewhere:
            emit(report, f"SKIP: the server's processes are not on this machine [{where}]")
            return 0
        finally:
            await conn.close()
    median = {
        step: statistics.median(r[step] for r in report["rounds"]) for step in ("floor", *STEPS)
    }
    daemon = sum(median[step] for step in STEPS)
    report.update(
        {
            "server_cpu_ms_per_job_median": median,
            "daemon_steps_ms_per_job": daemon,
            "daemon_over_floor": daemon / median["floor"],
            "jobs": args.jobs,
            "batch": args.batch,
        }
    )
    emit(
        report,
        f"INFO: server CPU per job: daemon's steps {daemon:.3f} ms ("
        + ", ".join(f"{s} {median[s]:.3f}" for s in STEPS)
        + f") against the floor's {median['floor']:.3f} ms = {daemon / median['floor']:.1f}x"
        f" [{where}, batch {args.batch}, {args.rounds} x {args.jobs} jobs]",
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per round")
    parser.add_argument("--batch", type=int, default=8, help="jobs per batched statement")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
