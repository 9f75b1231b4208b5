"""The daemon as real processes on one real database: exactly once, crash recovery, drain, health.

Every daemon here is ``python -m daemon run`` configured through ``EMGD_*`` variables (local
storage, JSON logs, short poll and lease), driven only from outside: uploads through the product's
upload path, signals, HTTP, and reading the database and the JSON log lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.isolation import analyze_to_dict
from daemon.local import upload
from daemon.report import picture_size, report_object_name
from daemon.settings import load_settings
from tests import dbutil
from tests.daemon_harness import BUCKET, recording
from tests.e2e_harness import REPO, SLOW_TARGET, Daemons, job_of, wait_for, wait_job

pytestmark = pytest.mark.e2e

CHANNELS = {"CH1 Raw", "CH2 Raw"}


# short recordings: these tests are about processes, and analyse hundreds of them
SECONDS = 6.0


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
    data = {seed: recording(seed, SECONDS) for seed in set(seeds)}
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

    # ~12 s here; minutes on a loaded 2-core CI machine are still a pass, not a hang
    await wait_for(all_finished, timeout=300, interval=0.2, what="200 jobs finished")

    async def all_pictured() -> bool:
        # the pictures follow the results, one at a time per daemon
        missing = await db.fetchval(
            "select count(*) from public.sessions where report_path is null"
        )
        return missing == 0

    await wait_for(all_pictured, timeout=300, interval=0.5, what="200 report pictures")
    # Stopped (drained) before reading the logs, so every line either daemon would write is there.
    assert await asyncio.gather(a.stop(), b.stop()) == [0, 0]
    logged = a.events("job_finished") + b.events("job_finished")

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
        raw = data[uploaded[str(j["session_id"])]]
        assert j["content_sha256"] == hashlib.sha256(raw).hexdigest()

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
            # an unusable channel stores no counts (NULL) and no contractions, like the analysis
            assert row["contractions_total"] == ch["contractions_total"]
            assert (ch["contractions_total"] or 0) == len(truth)
            assert row["starts"] == pytest.approx(truth), (session, seed, ch["name"])
            if ch["mvc_value"] is None:
                assert row["mvc_value"] is None
            else:
                assert row["mvc_value"] == pytest.approx(ch["mvc_value"], rel=1e-9)
            assert row["rms"] == pytest.approx(ch["rms"], rel=1e-9)

    # Every session has its report picture beside its recording, reused results included.
    reports = await db.fetch("select id, object_name, report_path from public.sessions")
    for r in reports:
        assert r["report_path"] == report_object_name(r["object_name"], str(r["id"])), dict(r)
        png = (daemons.storage / BUCKET / r["report_path"]).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == picture_size(len(CHANNELS))

    print(f"\n  job_finished per daemon: {per_daemon}; outcomes: {dict(outcomes)}")


# -- 2. SIGKILL mid-job: the lease expires, another daemon finishes, the late commit is refused ---


LATE_COMMIT = "select emgd.complete_job($1::bigint, $2::uuid, $3::jsonb, $4::text, $5::bigint)"


async def test_a_daemon_killed_mid_job_is_finished_by_another_and_its_late_commit_writes_nothing(
    daemons, db, patient
):
    # a's heartbeats (every lease/3) must keep the lease while b watches: 3 s leaves a loaded
    # machine two seconds of slack per heartbeat
    lease = 3.0
    a = daemons.start(
        "a",
        EMGD_ANALYSIS_TARGET=SLOW_TARGET,
        EMGD_TEST_ANALYSIS_DELAY=60,  # far past anything below: a is surely mid-analysis
        EMGD_LEASE_SECONDS=lease,
        EMGD_CONCURRENCY=1,
    )
    await a.wait_ready()
    raw = recording(7, SECONDS)
    session = await put(daemons, patient, raw, "killed_mid_job.c3d")
    held = await wait_job(
        db, session, timeout=15, state="running", lease_owner=a.owner, stage="analysing"
    )
    token, job_id = held["lease_token"], held["id"]
    assert held["attempts"] == 1 and held["lease_expires_at"] is not None
    workers = {p.pid for p in a.workers()}
    assert workers, "the daemon should have analysis worker processes"
    # The orphan check below finds processes by a marker in their environment: prove it sees them.
    assert workers | {a.pid} == {p.pid for p in a.leftovers()}

    b = daemons.start(
        "b",
        EMGD_ANALYSIS_TARGET=SLOW_TARGET,
        EMGD_TEST_ANALYSIS_DELAY=3,  # long enough to commit late while b holds the job
        EMGD_LEASE_SECONDS=lease,
    )
    await b.wait_ready()
    # While a lives its heartbeats keep the lease, past several lease lengths: b does not steal.
    await asyncio.sleep(lease * 1.5)
    still = await job_of(db, session)
    assert (still["state"], still["lease_owner"]) == ("running", a.owner)
    assert still["lease_token"] == token
    assert still["attempts"] == 1

    # a's late commit, made ready now: b holds the job for only 3 s once it has claimed it
    result = analyze_to_dict(raw, "killed_mid_job.c3d", {})
    result["processing"] = {"late_commit_from": "a"}
    late = json.dumps(result)

    a.signal(signal.SIGKILL)
    assert await a.wait_exit(5) == -signal.SIGKILL
    killed_at = time.time()
    expired_at = (await job_of(db, session))["lease_expires_at"]  # a can extend it no more
    # Its analysis worker dies with it (PR_SET_PDEATHSIG): no orphan keeps the CPU busy.
    await wait_for(lambda: not a.leftovers(), timeout=15, what="a's workers to die")

    taken = await wait_job(db, session, timeout=lease + 10, state="running", lease_owner=b.owner)
    # b takes it once a is dead: seen by a's released owner lock, or at the latest by its lease
    # running out (the lock check waits out a freshly started server's first seconds)
    assert taken["started_at"].timestamp() >= killed_at - 1.0, "b claimed the job while a lived"
    assert taken["started_at"] <= expired_at + timedelta(seconds=lease), "b waited too long"
    assert taken["attempts"] == 2 and taken["lease_token"] != token

    # a "wakes up" and commits with its old token while b holds the job: refused, nothing written.
    assert await db.fetchval(LATE_COMMIT, job_id, token, late, "0" * 64, len(raw)) is False
    row = await job_of(db, session)
    assert (row["state"], row["lease_owner"], row["processed_at"]) == ("running", b.owner, None)
    assert (
        await db.fetchval(
            "select count(*) from public.session_parameters where session_id = $1::uuid", session
        )
        == 0
    )

    done = await wait_job(db, session, timeout=15, state="succeeded", status="completed")
    assert done["attempts"] == 2 and done["last_error"] is None
    (finished,) = await wait_for(
        lambda: b.events("job_finished"), timeout=15, what="b's job_finished line"
    )
    assert (finished["job_id"], finished["outcome"]) == (job_id, "succeeded")
    assert not [e for e in a.lines() if e["event"] == "job_finished"]
    rescued = sum(e["jobs"] for e in b.events("expired_leases_rescued"))
    assert rescued == 1

    # And once more after b's commit: still refused, b's results stand untouched.
    before = await db.fetch(
        "select name, mvc_value, processing from public.session_parameters"
        " where session_id = $1::uuid order by name",
        session,
    )
    assert {r["name"] for r in before} == CHANNELS
    assert await db.fetchval(LATE_COMMIT, job_id, token, late, "0" * 64, len(raw)) is False
    after = await db.fetch(
        "select name, mvc_value, processing from public.session_parameters"
        " where session_id = $1::uuid order by name",
        session,
    )
    assert after == before
    assert "late_commit_from" not in json.dumps([r["processing"] for r in after])
    sha = await db.fetchval("select content_sha256 from public.sessions where id = $1", session)
    assert sha != "0" * 64
    print(f"\n  killed -> finished by b in {time.time() - killed_at:.1f} s (lease {lease:g} s)")
    assert await b.stop() == 0


# -- 3. SIGTERM: stop claiming, report not ready, finish or hand back what is in flight, exit 0 ---


async def test_sigterm_drains_the_job_in_flight_claims_nothing_more_and_exits_0(
    daemons, db, patient
):
    d = daemons.start(
        "d",
        EMGD_ANALYSIS_TARGET=SLOW_TARGET,
        EMGD_TEST_ANALYSIS_DELAY=4,
        EMGD_CONCURRENCY=1,
        EMGD_SHUTDOWN_GRACE=20,
    )
    await d.wait_ready()
    first = await put(daemons, patient, recording(1, SECONDS), "in_flight.c3d")
    await wait_job(db, first, timeout=15, state="running", stage="analysing")
    waiting = await put(
        daemons, patient, recording(2, SECONDS), "waiting.c3d"
    )  # the one slot is busy

    d.signal(signal.SIGTERM)
    status, body = await d.get("/readyz")
    assert status == 503, body
    assert "draining" in body["not_ready"], body
    assert body["in_flight"] == 1
    assert await d.wait_exit(30) == 0

    done = await job_of(db, first)
    assert (done["state"], done["status"], done["attempts"]) == ("succeeded", "completed", 1)
    left = await job_of(db, waiting)
    assert (left["state"], left["attempts"], left["lease_owner"]) == ("pending", 0, None)
    events = [e["event"] for e in d.lines()]
    assert events.index("daemon_stopping") < events.index("job_finished")
    assert events.index("job_finished") < events.index("daemon_stopped")
    (finished,) = d.events("job_finished")
    assert (finished["job_id"], finished["outcome"]) == (done["id"], "succeeded")
    assert d.events("daemon_stopped")[0]["exit_code"] == 0
    assert not d.events("job_released")
    assert not d.leftovers()


async def test_sigterm_past_the_grace_releases_the_job_and_another_daemon_finishes_it(
    daemons, db, patient
):
    d = daemons.start(
        "d",
        EMGD_ANALYSIS_TARGET=SLOW_TARGET,
        EMGD_TEST_ANALYSIS_DELAY=60,
        EMGD_CONCURRENCY=1,
        EMGD_SHUTDOWN_GRACE=0.5,
    )
    await d.wait_ready()
    session = await put(daemons, patient, recording(3, SECONDS), "too_slow_to_drain.c3d")
    await wait_job(db, session, timeout=15, state="running", stage="analysing", attempts=1)

    stopping = time.monotonic()
    d.signal(signal.SIGTERM)
    assert await d.wait_exit(40) == 0
    took = time.monotonic() - stopping
    # ~1 s here; the bound only has to stay clear of the 60 s analysis it must not wait for
    assert took < 30, f"drain took {took:.1f} s with a 0.5 s grace"
    released = await job_of(db, session)
    # Handed back untouched: pending at once, the attempt not counted, no lease, session queued.
    assert (released["state"], released["attempts"]) == ("pending", 0)
    assert released["lease_owner"] is None
    assert (released["status"], released["stage"]) == ("pending", "queued")
    assert [e["job_id"] for e in d.events("job_released")] == [released["id"]]
    assert d.events("daemon_stopped")[0]["exit_code"] == 0
    await wait_for(lambda: not d.leftovers(), timeout=15, what="d's workers to exit")

    e = await daemons.start_ready("e", EMGD_ANALYSIS_TARGET=SLOW_TARGET)
    done = await wait_job(db, session, timeout=15, state="succeeded", status="completed")
    assert done["attempts"] == 1
    # the log line follows the commit: the database can say succeeded a moment before it
    (finished,) = await wait_for(
        lambda: e.events("job_finished"), timeout=15, what="e's job_finished line"
    )
    assert finished["outcome"] == "succeeded"
    print(f"\n  SIGTERM with a 0.5 s grace -> exit 0 after {took:.1f} s")
    assert await e.stop() == 0


async def test_sigterm_while_starting_up_still_stops_cleanly_with_exit_0(daemons, db, patient):
    # Workers warming up take a moment after the process starts; an orchestrator may stop the
    # daemon right then (a rollout, a scale-down). That is still an orderly stop: exit 0, nothing
    # claimed, no worker left behind, not death by the default signal handler.
    session = await put(daemons, patient, recording(6, SECONDS), "uploaded_before_start.c3d")
    d = daemons.start("d")
    await wait_for(d.workers, timeout=30, interval=0.01, what="d to spawn analysis workers")
    d.signal(signal.SIGTERM)
    assert await d.wait_exit(30) == 0, d.log_text()
    assert d.events("daemon_stopped")[0]["exit_code"] == 0
    job = await job_of(db, session)
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("pending", 0, None)
    await wait_for(lambda: not d.leftovers(), timeout=15, what="d's workers to exit")


# -- 4. emgd check and /metrics --------------------------------------------------------------


def emgd_check(port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMGD_")}
    env["EMGD_HEALTH_PORT"] = str(port)
    return subprocess.run(
        [sys.executable, "-m", "daemon", "check", "--timeout", "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_check_and_metrics_follow_a_running_daemon(daemons, db, patient):
    d = await daemons.start_ready("d")
    sessions = [await put(daemons, patient, recording(i, SECONDS), f"m{i}.c3d") for i in range(3)]
    for s in sessions:
        await wait_job(db, s, timeout=20, state="succeeded")

    ok = await asyncio.to_thread(emgd_check, d.port)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "ready"

    async def settled() -> dict | None:
        # Queue depth is refreshed by the lease keeper, every heartbeat.
        _, text = await d.get("/metrics")
        samples = metric_samples(text)
        depth = samples.get(("emgd_queue_depth", (("state", "succeeded"),)))
        # the counter moves after the commit the queue depth already sees: wait for both
        finished = samples.get(("emgd_jobs_finished_total", (("outcome", "succeeded"),)))
        return samples if depth == finished == 3 else None

    samples = await wait_for(settled, timeout=30, interval=0.2, what="settled /metrics")
    assert samples[("emgd_jobs_claimed_total", ())] == 3
    assert samples[("emgd_jobs_finished_total", (("outcome", "succeeded"),))] == 3
    assert samples[("emgd_queue_depth", (("state", "pending"),))] == 0
    assert samples[("emgd_queue_depth", (("state", "running"),))] == 0
    assert samples[("emgd_jobs_in_progress", ())] == 0
    assert samples[("emgd_job_stage_seconds_count", (("stage", "analyse"),))] == 3
    assert (await d.get("/livez"))[0] == 200

    assert await d.stop() == 0
    gone = await asyncio.to_thread(emgd_check, d.port)
    assert gone.returncode == 1
    assert "cannot reach" in gone.stderr


# -- 5. a part of the daemon dying stops the whole daemon -------------------------------------


async def test_a_dead_side_task_stops_the_daemon_and_hands_jobs_back(daemons, db, patient):
    # The health server cannot bind (the port is taken): the daemon must not run on without probes.
    session = await put(daemons, patient, recording(4, SECONDS), "waiting_for_a_daemon.c3d")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        d = daemons.start(
            "d",
            EMGD_HEALTH_PORT=port,
            EMGD_ANALYSIS_TARGET=SLOW_TARGET,
            EMGD_TEST_ANALYSIS_DELAY=60,
        )
        assert await d.wait_exit(45) == 1
    died = d.events("side_task_died")
    assert [e["task"] for e in died] == ["health"], d.log_text()
    assert d.events("daemon_task_failed")
    assert d.events("daemon_stopped")[0]["exit_code"] == 1
    # Whether or not it claimed the job before the health task died, nothing is left held.
    job = await job_of(db, session)
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("pending", 0, None)
    await wait_for(lambda: not d.leftovers(), timeout=15, what="d's workers to exit")


async def test_a_dropped_database_stops_the_daemon(daemons, database_factory, server_url):
    # A database that is gone for good is not a blip to wait out: exit 1 so a supervisor notices.
    url = database_factory()
    d = daemons.start("d", dsn=url)
    await d.wait_ready()
    await dbutil.drop_database(server_url, dbutil.database_name(url))
    assert await d.wait_exit(30) == 1, d.log_text()
    assert d.events("daemon_task_failed"), d.log_text()
    assert d.events("daemon_stopped")[0]["exit_code"] == 1
    await wait_for(lambda: not d.leftovers(), timeout=15, what="d's workers to exit")


async def test_a_side_task_dying_mid_job_hands_the_job_back_and_exits_1(daemons, db, patient):
    # The lease keeper meets a permanent error (a function it calls was dropped by a bad
    # migration) while a job is mid-analysis: the daemon stops, and the job is released for others
    # instead of waiting out a lease held by a daemon that no longer heartbeats.
    d = daemons.start(
        "d",
        EMGD_ANALYSIS_TARGET=SLOW_TARGET,
        EMGD_TEST_ANALYSIS_DELAY=60,
        EMGD_LEASE_SECONDS=30,  # long: only a release, not an expiry, frees the job in time
        EMGD_HEARTBEAT_INTERVAL=0.5,
    )
    await d.wait_ready()
    session = await put(daemons, patient, recording(5, SECONDS), "in_flight_when_keeper_dies.c3d")
    await wait_job(db, session, timeout=15, state="running", stage="analysing", lease_owner=d.owner)
    await db.execute("drop function emgd.queue_depth()")
    assert await d.wait_exit(30) == 1, d.log_text()
    assert [e["task"] for e in d.events("side_task_died")] == ["lease_keeper"]
    assert d.events("daemon_stopped")[0]["exit_code"] == 1
    job = await job_of(db, session)
    assert (job["state"], job["attempts"], job["lease_owner"]) == ("pending", 0, None)
    assert (job["status"], job["stage"]) == ("pending", "queued")
    assert [e["job_id"] for e in d.events("job_released")] == [job["id"]]
    await wait_for(lambda: not d.leftovers(), timeout=15, what="d's workers to exit")
