"""Query plans at production size: 100k sessions (99% of their jobs finished) and 1M contractions.

In the style of PgQueuer's plan-regression tests: the statements the daemon and the app really
send are planned on a loaded database and their plans are asserted to reach rows through indexes,
never by reading a whole large table. The daemon's statements run inside its SQL functions, so
their plans are captured with auto_explain (nested statements, JSON), sent to this client as LOG
messages: what is checked is the function as deployed, not a copy of its SQL.

A plan is judged by shape, never by time (no timed tests): "no Seq Scan on emgd.jobs" stays true
on any machine, while milliseconds do not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests import dbutil

SESSIONS = 100_000
CONTRACTIONS_PER_SESSION = 10
PATIENTS = 1_000
THERAPISTS = 50

# Deterministic ids, so a test can name the therapist, a patient or a session it wants.
THERAPIST = "10000000-0000-4000-8000-000000000001"


def _uid(prefix: str, i: str) -> str:
    return f"('{prefix}-0000-4000-8000-' || lpad(to_hex({i}), 12, '0'))::uuid"


LOAD = f"""
set session_replication_role = replica;  -- bulk fixture: no triggers, no FK checks
insert into storage.buckets (id, name) values ('c3d-examples', 'c3d-examples')
    on conflict (id) do nothing;
insert into auth.users (id, aud, role, email)
    select {_uid("20000000", "p")}, 'authenticated', 'authenticated', 'p' || p || '@x.test'
    from generate_series(1, {PATIENTS}) p
    union all
    select {_uid("10000000", "t")}, 'authenticated', 'authenticated', 't' || t || '@x.test'
    from generate_series(1, {THERAPISTS}) t;
insert into public.users (id, role)
    select {_uid("20000000", "p")}, 'patient' from generate_series(1, {PATIENTS}) p
    union all
    select {_uid("10000000", "t")}, 'therapist' from generate_series(1, {THERAPISTS}) t;
insert into public.therapist_patients (therapist_id, patient_id, active)
    select {_uid("10000000", "(p % " + str(THERAPISTS) + ") + 1")}, {_uid("20000000", "p")},
           p % 7 <> 0
    from generate_series(1, {PATIENTS}) p;
insert into storage.objects (id, bucket_id, name, owner_id, metadata, version)
    select {_uid("30000000", "i")}, 'c3d-examples',
           {_uid("20000000", f"(i % {PATIENTS}) + 1")}::text || '/' || i || '.c3d',
           {_uid("20000000", f"(i % {PATIENTS}) + 1")}::text,
           jsonb_build_object('size', 3000000 + i), md5(i::text)
    from generate_series(1, {SESSIONS}) i;
insert into public.sessions (id, bucket_id, object_name, object_id, object_version, patient_id,
                             recorded_at, status, stage, progress, created_at)
    select {_uid("40000000", "i")}, o.bucket_id, o.name, o.id, o.version,
           {_uid("20000000", f"(i % {PATIENTS}) + 1")},
           now() - make_interval(mins => i * 7),
           case when i % 1000 < 990 then 'completed' when i % 1000 < 995 then 'failed'
                when i % 1000 < 998 then 'pending' else 'processing' end,
           'done', 1, now() - make_interval(mins => i * 7)
    from generate_series(1, {SESSIONS}) i
    join storage.objects o on o.id = {_uid("30000000", "i")};
insert into emgd.jobs (session_id, state, attempts, run_after, lease_owner, lease_token,
                       lease_expires_at, object_version, started_at, finished_at)
    select s.id,
           case when i % 1000 < 990 then 'succeeded' when i % 1000 < 995 then 'failed'
                when i % 1000 < 998 then 'pending' else 'running' end,
           1,
           now() - interval '1 minute',
           case when i % 1000 >= 998 then gen_random_uuid() end,
           case when i % 1000 >= 998 then gen_random_uuid() end,
           case when i % 1000 = 998 then now() - interval '1 minute'
                when i % 1000 = 999 then now() + interval '1 hour' end,
           s.object_version,
           s.created_at,
           case when i % 1000 < 995 then s.created_at end
    from generate_series(1, {SESSIONS}) i
    join public.sessions s on s.id = {_uid("40000000", "i")};
insert into public.contractions (session_id, channel, contraction_index, start_ms, end_ms,
                                 duration_ms, peak_amplitude, mean_amplitude, meets_mvc,
                                 meets_duration, is_good)
    select s.id, 'CH' || (k % 2 + 1), k / 2, k * 1000.0, k * 1000.0 + 500, 500, 1e-4, 5e-5,
           true, true, true
    from public.sessions s, generate_series(0, {CONTRACTIONS_PER_SESSION - 1}) k;
set session_replication_role = origin;
"""


@pytest.fixture(scope="module")
def loaded_url(database_factory) -> str:
    url = database_factory()

    async def load() -> None:
        conn = await dbutil.connect(url)
        try:
            await conn.execute(LOAD)
            await conn.execute("vacuum analyze")
        finally:
            await conn.close()

    dbutil.run_sync(load)
    return url


@pytest.fixture
async def conn(loaded_url) -> Iterator[asyncpg.Connection]:
    c = await dbutil.connect(loaded_url)
    try:
        await c.execute("load 'auto_explain'")
    except asyncpg.PostgresError as exc:
        await c.close()
        pytest.skip(f"auto_explain is not available on this server: {exc}")
    yield c
    await c.close()


async def plans(
    conn: asyncpg.Connection, sql: str, *args: Any, user: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """Every plan auto_explain logs while ``sql`` runs (the statement and those nested in the
    functions it calls), in a transaction that is rolled back: the data stays as loaded.
    With ``user``, the statement runs as that signed-in user does through the API (RLS on)."""
    got: list[dict[str, Any]] = []

    def listen(_conn, message) -> None:
        text = message.message
        if "plan:" in text:
            got.append(json.loads(text.split("plan:", 1)[1]))

    conn.add_log_listener(listen)
    try:
        async with conn.transaction():
            for setting in (
                "auto_explain.log_min_duration = 0",
                "auto_explain.log_nested_statements = on",
                "auto_explain.log_format = 'json'",
                "auto_explain.log_analyze = on",
                "auto_explain.log_buffers = on",
                "auto_explain.log_timing = off",
                "client_min_messages = log",
            ):
                await conn.execute(f"set local {setting}")
            if user is not None:
                await conn.execute(
                    "select set_config('role', 'authenticated', true),"
                    " set_config('request.jwt.claims', $1, true)",
                    json.dumps(dbutil.claims_for(user, "authenticated")),
                )
            await conn.fetch(sql, *args)
            await conn.execute("set local client_min_messages = notice")
            raise _Rollback
    except _Rollback:
        pass
    finally:
        conn.remove_log_listener(listen)
    assert got, "auto_explain logged no plan"
    return got


class _Rollback(Exception):
    pass


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [plan.get("Plan", plan)]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.get("Plans", []))


def plan_of(found: list[dict[str, Any]], marker: str) -> dict[str, Any]:
    """The logged plan whose query text contains ``marker``."""
    matching = [p for p in found if marker in p.get("Query Text", "")]
    assert matching, f"no plan for a statement containing {marker!r}"
    return matching[-1]


def seq_scans(plan: dict[str, Any]) -> set[str]:
    return {n["Relation Name"] for n in nodes(plan) if n["Node Type"] == "Seq Scan"}


def indexes(plan: dict[str, Any]) -> set[str]:
    return {n["Index Name"] for n in nodes(plan) if "Index Name" in n}


def buffers(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)


BIG = {"jobs", "sessions", "objects", "contractions", "session_parameters"}


async def test_the_claim_reads_only_pending_jobs(conn):
    found = await plans(conn, "select * from emgd.claim_jobs($1, 10, 30)", uuid.uuid4())
    plan = plan_of(found, "with picked as materialized")
    assert not seq_scans(plan) & BIG, json.dumps(plan, indent=1)
    assert "jobs_pending_idx" in indexes(plan)
    # 99,000 finished jobs cost the claim nothing: it touches a few hundred pages at most
    # (the whole jobs table is thousands).
    assert buffers(plan) < 600, buffers(plan)
    claimed = plan["Plan"]["Actual Rows"]
    assert claimed == 10


async def test_the_rescue_reads_only_running_jobs(conn):
    found = await plans(conn, "select emgd.rescue_expired()")
    plan = plan_of(found, "expired as")
    assert "jobs" not in seq_scans(plan), json.dumps(plan, indent=1)
    assert "jobs_running_lease_idx" in indexes(plan)
    # the 50 expired leases of the 100 running jobs, out of 100,000
    assert plan["Plan"]["Actual Rows"] == 0 and "Rows Removed by Filter" not in plan["Plan"]
    scans = [n for n in nodes(plan) if n.get("Relation Name") == "jobs" and "Index Name" in n]
    assert sum(n["Actual Rows"] * n.get("Actual Loops", 1) for n in scans) <= 200


async def test_catch_up_is_one_pass_over_the_objects(conn):
    """Catch-up compares every object with its session and job: reading each of the three tables
    once is the job itself, and hash joins are the cheapest way to do it (an index probe per
    object would be 200,000 random reads). What must never happen is a table read again per row
    (a scan inside a loop), which turns the reconcile every daemon runs on each connect from
    linear into quadratic; and the sessions' results (contractions) are never touched."""
    found = await plans(conn, "select emgd.catch_up()")
    plan = plan_of(found, "from storage.objects o")
    per_table: dict[str, int] = {}
    for node in nodes(plan):
        if "Relation Name" in node:
            per_table[node["Relation Name"]] = per_table.get(node["Relation Name"], 0) + node.get(
                "Actual Loops", 1
            )
    assert per_table.get("objects") == 1, per_table
    assert per_table.get("sessions", 0) <= 1 and per_table.get("jobs", 0) <= 1, per_table
    assert not per_table.keys() & {"contractions", "session_parameters"}
    assert plan["Plan"]["Actual Rows"] == 1  # count(): nothing was missing in the loaded data


async def test_a_therapists_sessions_by_date_use_an_index(conn):
    """As the app asks it, signed in as the therapist: RLS applies its policies on top."""
    therapist = uuid.UUID(THERAPIST)
    sql = (
        "select s.id, s.object_name, s.recorded_at, s.status"
        " from public.sessions s"
        " join public.therapist_patients tp on tp.patient_id = s.patient_id"
        " where tp.therapist_id = $1 and tp.active"
        " order by s.recorded_at desc limit 50"
    )
    found = await plans(conn, sql, therapist, user=therapist)
    plan = plan_of(found, "from public.sessions s")
    assert plan["Plan"]["Actual Rows"] == 50
    assert not seq_scans(plan) & BIG, json.dumps(plan, indent=1)
    assert "sessions_patient_recorded_idx" in indexes(plan)


async def test_one_sessions_contractions_use_an_index(conn):
    session = await conn.fetchval("select id from public.sessions order by id offset 777 limit 1")
    sql = (
        "select * from public.contractions where session_id = $1"
        " order by channel, contraction_index"
    )
    plan = plan_of(await plans(conn, sql, session), "from public.contractions")
    assert not seq_scans(plan) & BIG, json.dumps(plan, indent=1)
    assert plan["Plan"]["Actual Rows"] == CONTRACTIONS_PER_SESSION
    assert buffers(plan) < 50, buffers(plan)
