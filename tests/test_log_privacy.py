"""No patient data or secrets in the logs: a forced internal error mid-job, with a canary string
in the file's metadata, its bytes and its name, and secrets in the settings, logs none of them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import structlog

from daemon import logs
from daemon.local import upload
from emg_core.synthetic import c3d_bytes, ghostly_signals
from tests import dbutil
from tests.daemon_harness import daemon_settings, make_patient, running_daemon, wait_sessions

CANARY = "CANARY7Q4Z"
SERVICE_KEY = "canary-service-role-key-0123456789"


@pytest.fixture
def json_logs():
    saved = structlog.get_config()
    logs.configure("json", "debug")
    yield
    structlog.configure(**saved)


def canary_recording() -> bytes:
    labels, data, truth = ghostly_signals(seed=11, duration_s=10.0)
    meta = dataclasses.replace(truth.metadata, player_name=CANARY, therapist_id=CANARY)
    return c3d_bytes(labels, data, truth.rate, metadata=meta, recorded_at=truth.recorded_at)


async def test_a_forced_internal_error_logs_no_patient_data_or_secret(
    db_url, tmp_path, capfd, json_logs
):
    data = canary_recording()
    assert CANARY.encode() in data
    settings = daemon_settings(
        db_url,
        tmp_path / "storage",
        analysis_target="tests.isolation_targets:real_then_nan",
        supabase_service_role_key=SERVICE_KEY,
    )
    patient = await make_patient(db_url)
    conn = await dbutil.connect(db_url)
    try:
        async with running_daemon(settings, db_url) as d:
            sid = await upload(settings, db_url, data, patient, f"{CANARY}-session.c3d")
            # a file outside any patient's folder fails with a reason that names it
            stray = await dbutil.upload_object(
                conn, "c3d-examples", f"{CANARY}/stray.c3d", role="service_role", data=data
            )
            stray_sid = await conn.fetchval(
                "select id from public.sessions where object_name = $1", stray["name"]
            )
            row = (await wait_sessions(conn, [sid, stray_sid], daemon=d))[str(sid)]
            job = await conn.fetchrow("select * from emgd.jobs where session_id = $1", row["id"])
    finally:
        await conn.close()
    assert row["status"] == "failed" and "internal error (ValueError)" in row["last_error"]

    out, err = capfd.readouterr()
    text = out + err
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    internal = [e for e in lines if e.get("event") == "job_internal_error"]
    assert internal, "the forced error must have been logged"
    # the log still says what happened, by pseudonymous ids, with the traceback's frames
    assert internal[0]["session_id"] == str(row["id"]) and internal[0]["job_id"] == job["id"]
    assert "exception" in internal[0] and "json" in json.dumps(internal[0]["exception"])
    for needle in [CANARY, SERVICE_KEY, repr(data[:16])[2:-1], "lease_token", str(patient)]:
        assert needle not in text, f"{needle!r} reached the log"


def test_registered_secrets_are_redacted_from_every_line(capsys, json_logs):
    logs.redact("s3cret-database-password", "short")
    log = structlog.get_logger("test")
    log.error("connect_failed", error="password authentication failed: s3cret-database-password")
    line = capsys.readouterr().err
    assert "s3cret-database-password" not in line and "[redacted]" in line


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_carry_frames_but_no_local_variables(capsys, fmt):
    saved = structlog.get_config()
    logs.configure(fmt, "info")
    try:

        def parse(recording: bytes) -> None:
            player = recording.decode()  # noqa: F841 - a local the traceback must not show
            raise ValueError("cannot parse")

        try:
            parse(f"{CANARY}-bytes".encode())
        except ValueError:
            structlog.get_logger("test").exception("job_internal_error")
    finally:
        structlog.configure(**saved)
    err = capsys.readouterr().err
    assert "cannot parse" in err and "parse" in err
    assert CANARY not in err
