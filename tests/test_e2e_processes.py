"""The daemon as real processes on one real database: exactly once, crash recovery, drain, health.

Every daemon here is ``python -m daemon run`` configured through ``EMGD_*`` variables (local
storage, JSON logs, short poll and lease), driven only from outside: uploads through the product's
upload path, signals, HTTP, and reading the database and the JSON log lines.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.cmd_upload import upload
from daemon.isolation import analyze_to_dict
from daemon.settings import load_settings
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.e2e_harness import Daemons, wait_for

pytestmark = pytest.mark.e2e

CHANNELS = {"CH1 Raw", "CH2 Raw"}


@pytest.fixture
def daemons(db_url: str, tmp_path: Path):
    started = Daemons(db_url, tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
async def patient(db: asyncpg.Connection) -> uuid.UUID:
    return await dbutil.make_user(db, "patient")


def recording(seed: int, duration_s: float = 6.0) -> bytes:
    return ghostly_recording(seed=seed, duration_s=duration_s)[0]


async def put(daemons: Daemons, patient: uuid.UUID, data: bytes, filename: str) -> str:
    """Upload as ``emgd upload`` does: bytes into local storage, then the storage.objects row."""
    settings = load_settings(
        database_url=daemons.dsn, storage_backend="local", local_storage_dir=daemons.storage
    )
    session = await upload(settings, daemons.dsn, data, patient, filename)
    assert session, f"no session was created for {filename}"
    return session


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- 1. two daemons, 200 uploads, each processed exactly once -----------------------------------


async def test_two_daemons_process_200_uploads_exactly_once(daemons, db, patient):
    a, b = daemons.start("a", EMGD_CONCURRENCY=3), daemons.start("b", EMGD_CONCURRENCY=3)
    await asyncio.gather(a.wait_ready(), b.wait_ready())

    # 170 different recordings, then 30 of them again under new names: identical content is
    # reused (copied from the session that has it) rather than analysed again, which must be
    # exactly as correct as analysing it.
    seeds = list(range(170)) + list(range(30))
    data = {seed: recording(seed) for seed in set(seeds)}
    gate = asyncio.Semaphore(8)

    async def one(i: int, seed: int) -> tuple[str, int]:
        async with gate:
            return await put(daemons, patient, data[seed], f"rec_{i:03d}_seed{seed}.c3d"), seed

    uploaded = dict(await asyncio.gather(*(one(i, s) for i, s in enumerate(seeds))))
    assert len(uploaded) == 200

    async def all_finished() -> bool:
        done = await db.fetchval(
            "select count(*) from emgd.jobs where state in ('succeeded', 'failed', 'quarantined')"
        )
        return done == 200

    await wait_for(all_finished, timeout=60, interval=0.2, what="200 jobs finished")

    def finished_lines() -> list[dict]:
        return a.events("job_finished") + b.events("job_finished")

    # A daemon logs job_finished right after its commit: give the last lines a moment.
    await wait_for(lambda: len(finished_lines()) >= 200, timeout=10, what="job_finished lines")
    logged = finished_lines()

    jobs = await db.fetch(
        "select j.id, j.session_id, j.state, j.attempts, j.crashes, j.last_error, j.lease_owner,"
        " s.status, s.stage, s.error, s.processed_at, s.content_sha256"
        " from emgd.jobs j join public.sessions s on s.id = j.session_id"
    )
    assert len(jobs) == 200
    assert {str(j["session_id"]) for j in jobs} == set(uploaded)
    for j in jobs:
        assert (j["state"], j["status"], j["stage"]) == ("succeeded", "completed", "done"), dict(j)
        assert j["attempts"] == 1 and j["crashes"] == 0 and j["lease_owner"] is None, dict(j)
        assert j["error"] is None and j["last_error"] is None and j["processed_at"] is not None

    # Exactly one job_finished per job across both daemons, and both did real work.
    job_ids = [e["job_id"] for e in logged]
    assert len(logged) == 200 and sorted(job_ids) == sorted(j["id"] for j in jobs)
    outcomes = Counter(e["outcome"] for e in logged)
    assert set(outcomes) <= {"succeeded", "reused"}, outcomes
    per_daemon = {d.name: len(d.events("job_finished")) for d in (a, b)}
    assert min(per_daemon.values()) > 0, per_daemon

    # One set of results per session, equal to analysing its bytes directly.
    params = await db.fetch(
        "select session_id, name, contractions_total, mvc_value, rms, mpf_hz"
        " from public.session_parameters"
    )
    contractions = await db.fetch(
        "select session_id, channel, contraction_index, start_ms, end_ms"
        " from public.contractions order by session_id, channel, contraction_index"
    )
    by_session: dict[str, dict[str, dict]] = {}
    for p in params:
        channels = by_session.setdefault(str(p["session_id"]), {})
        assert p["name"] not in channels
        channels[p["name"]] = {**dict(p), "starts": []}
    for c in contractions:
        by_session[str(c["session_id"])][c["channel"]]["starts"].append(c["start_ms"])
    expected = {seed: analyze_to_dict(raw, "x.c3d", {}) for seed, raw in data.items()}
    for session, seed in uploaded.items():
        channels = by_session.get(session, {})
        assert set(channels) == CHANNELS, (session, seed, set(channels))
        for ch in expected[seed]["channels"]:
            row = channels[ch["name"]]
            truth = [k["start_ms"] for k in ch["contractions"]]
            assert row["contractions_total"] == ch["contractions_total"] == len(truth)
            assert row["starts"] == pytest.approx(truth), (session, seed, ch["name"])
            assert row["mvc_value"] == pytest.approx(ch["mvc_value"], rel=1e-9)
            assert row["rms"] == pytest.approx(ch["rms"], rel=1e-9)

    print(f"\n  job_finished per daemon: {per_daemon}; outcomes: {dict(outcomes)}")
    assert await a.stop() == 0 and await b.stop() == 0
