"""Database errors are judged by their SQLSTATE class: the server's trouble (a full disk, a
shutdown, a lost connection, a deadlock) retries the job with backoff; the data's fault (a value
out of range, a constraint) fails it at once. A disk that fills up and is freed again must not
leave jobs failed for good."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from asyncpg import exceptions as pgerr

from daemon.dberrors import TRANSIENT_DB_ERRORS, describe, is_transient
from daemon.local import upload
from emg_core.synthetic import ghostly_recording
from tests import dbutil
from tests.daemon_harness import daemon_settings, make_patient, running_daemon, wait_sessions

TRANSIENT_CODES = {
    "53100": "disk full",
    "53200": "out of memory",
    "53300": "too many connections",
    "53999": "an insufficient-resources code asyncpg has no class for",
    "57014": "query canceled (statement timeout)",
    "57P01": "admin shutdown",
    "57P03": "cannot connect now",
    "08006": "connection failure",
    "08000": "connection exception",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
}
PERMANENT_CODES = {
    "22003": "numeric value out of range",
    "22P02": "invalid text representation",
    "23514": "check violation",
    "23505": "unique violation",
    "P0001": "a validation trigger's plain raise",
    "42883": "undefined function",
}


def server_error(code: str, message: str = "boom") -> asyncpg.PostgresError:
    """The exception asyncpg raises when the server answers with this SQLSTATE."""
    return pgerr.PostgresError.new({"C": code, "M": message, "S": "ERROR"})


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES))
def test_server_trouble_is_transient(code):
    exc = server_error(code)
    assert is_transient(exc), (code, TRANSIENT_CODES[code], type(exc))
    assert describe(exc) == f"boom (SQLSTATE {code})"


@pytest.mark.parametrize("code", sorted(PERMANENT_CODES))
def test_the_datas_fault_is_permanent(code):
    exc = server_error(code)
    assert not is_transient(exc), (code, PERMANENT_CODES[code], type(exc))


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        pgerr.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
    ],
    ids=repr,
)
def test_client_side_connection_trouble_is_transient(exc):
    assert is_transient(exc)


def test_the_except_tuple_agrees_with_the_classes():
    """Every asyncpg class named in TRANSIENT_DB_ERRORS stands for a transient SQLSTATE class, and
    every known asyncpg exception of a transient class is caught by the tuple."""
    for cls in TRANSIENT_DB_ERRORS:
        code = getattr(cls, "sqlstate", None)
        if code:
            assert is_transient(server_error(code)), cls
    for name in dir(pgerr):
        cls = getattr(pgerr, name)
        code = getattr(cls, "sqlstate", None) if isinstance(cls, type) else None
        if isinstance(code, str) and len(code) == 5:
            assert issubclass(cls, TRANSIENT_DB_ERRORS) == is_transient(server_error(code)), name


# -- through the real commit path ----------------------------------------------------------------

# Raises the SQLSTATE written in the object's name (".../code-53100.c3d") while the results are
# inserted, the way a full disk or a validation trigger fails emgd.complete_job.
FAULT_TRIGGER = """
create function public.test_fault() returns trigger language plpgsql as $$
declare
    code text;
begin
    select substring(s.object_name from 'code-([0-9A-Z]{5})') into code
    from public.sessions s where s.id = new.session_id;
    if code is not null then
        raise exception using errcode = code,
            message = format('could not extend file "base/5/16384": No space left on device'
                             ' (test fault %s)', code);
    end if;
    return new;
end $$;
create trigger test_fault before insert on public.session_parameters
    for each row execute function public.test_fault();
"""


async def test_a_full_disk_retries_and_the_job_completes_once_space_is_back(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "s", concurrency=2)
    patient = await make_patient(db_url)
    data = ghostly_recording(seed=11, duration_s=4.0)[0]
    codes = [*TRANSIENT_CODES, *PERMANENT_CODES]
    conn = await dbutil.connect(db_url)
    try:
        await conn.execute(FAULT_TRIGGER)
        async with running_daemon(settings, db_url) as d:
            sids = {
                code: await upload(settings, db_url, data, patient, f"code-{code}.c3d")
                for code in codes
            }
            # every job has met its fault once: transient ones wait to retry, the others failed
            rows = await wait_sessions(
                conn,
                sids.values(),
                statuses=("pending", "processing", "failed"),
                until=lambda r: r["last_error"] is not None,
                timeout=90,
                daemon=d,
            )
            for code in TRANSIENT_CODES:
                row = rows[sids[code]]
                assert row["job_state"] in ("pending", "running"), (code, row["last_error"])
                assert row["last_error"].startswith("database unavailable: could not extend"), code
                assert f"SQLSTATE {code}" in row["last_error"], code
                assert "gave up" not in row["last_error"], code
            for code in PERMANENT_CODES:
                row = rows[sids[code]]
                assert (row["job_state"], row["attempts"]) == ("failed", 1), code
                assert row["last_error"].startswith(
                    "results rejected by the database: could not"
                ), code
                assert "did not pass the checks" in row["error"], code

            # space is freed: the waiting jobs finish on their next attempt, nothing stays failed
            await conn.execute("drop trigger test_fault on public.session_parameters")
            transient = [sids[c] for c in TRANSIENT_CODES]
            done = await wait_sessions(conn, transient, timeout=120, daemon=d)
        for code in TRANSIENT_CODES:
            row = done[sids[code]]
            assert (row["status"], row["job_state"]) == ("completed", "succeeded"), code
            assert row["attempts"] >= 2 and row["error"] is None, code
            assert await conn.fetchval(
                "select count(*) from public.session_parameters where session_id = $1",
                uuid.UUID(sids[code]),
            )
    finally:
        await conn.close()


# -- unexpected errors inside the analysis -------------------------------------------------------

TOO_BIG = b"TOO-BIG:"
TOO_MUCH = b"TOO-MUCH:"
NUMPY_WORDS = ("arr.size", "itemsize", "dtype", "Unable to allocate", "shape (")


def numpy_trouble(data: bytes, name: str, options: dict) -> dict:
    """Analysis target: the real analysis, except that a file starting with a marker makes numpy
    itself fail the way a hostile header once did (a shape whose size overflows; an allocation
    far beyond the worker's memory limit)."""
    import numpy as np

    from daemon.isolation import analyze_to_dict

    if data.startswith(TOO_BIG):
        np.empty((2**40, 2**40))  # ValueError: array is too big; `arr.size * arr.dtype.itemsize`
    if data.startswith(TOO_MUCH):
        np.ones(2**31)  # MemoryError: Unable to allocate 16.0 GiB for an array with shape ...
    return analyze_to_dict(data, name, options)


TARGET = f"{__name__}:numpy_trouble"


async def test_numpy_messages_stay_in_the_log_not_in_the_reason():
    from daemon.isolation import AnalysisPool, AnalysisRejected, WorkerCrashed

    pool = AnalysisPool(1, timeout_s=30, memory_mb=256, target=TARGET, preload=("numpy",))
    await pool.start()
    try:
        with pytest.raises(AnalysisRejected) as info:
            await pool.analyse(TOO_BIG + b"x", name="p/big.c3d", options={})
        reason = str(info.value)
        assert reason == info.value.reason
        assert info.value.code == "internal_error"
        assert reason.startswith("the analysis stopped on an unexpected ValueError: this file")
        assert not any(w in reason for w in NUMPY_WORDS), reason
        # the developer still gets numpy's words and where they came from
        assert "array is too big" in info.value.detail and "numpy_trouble" in info.value.detail

        with pytest.raises(WorkerCrashed) as info:
            await pool.analyse(TOO_MUCH + b"x", name="p/much.c3d", options={})
        assert str(info.value) == "analysis exceeded the memory limit (256 MB)"
        assert "Unable to allocate" in info.value.detail
    finally:
        await pool.close()


async def test_a_file_that_trips_numpy_fails_with_a_readable_reason(db_url, tmp_path):
    settings = daemon_settings(db_url, tmp_path / "s", analysis_target=TARGET, job_memory_mb=512)
    patient = await make_patient(db_url)
    good = ghostly_recording(seed=12, duration_s=4.0)[0]
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            big = await upload(settings, db_url, TOO_BIG + good, patient, "big.c3d")
            much = await upload(settings, db_url, TOO_MUCH + good, patient, "much.c3d")
            fine = await upload(settings, db_url, good, patient, "fine.c3d")
            rows = await wait_sessions(conn, [big, much, fine], timeout=90, daemon=d)
        assert rows[fine]["status"] == "completed"
        assert (rows[big]["status"], rows[big]["job_state"]) == ("failed", "failed")
        assert rows[big]["last_error"] == (
            "the analysis stopped on an unexpected ValueError: this file could not be analysed"
            " (the details are in the daemon's log)"
        )
        assert "internal error" in rows[big]["error"] and "ValueError" not in rows[big]["error"]
        assert (rows[much]["status"], rows[much]["job_state"]) == ("failed", "quarantined")
        assert rows[much]["last_error"].startswith(
            "analysis exceeded the memory limit (512 MB) (twice"
        )
        assert "set aside" in rows[much]["error"]
        for sid in (big, much):
            for text in (rows[sid]["error"], rows[sid]["last_error"]):
                assert not any(w in text for w in NUMPY_WORDS), text
    finally:
        await conn.close()
