"""The operator's verbs as a user runs them: real `python -m daemon` processes, real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from emg_core.synthetic import ghostly_recording
from tests import dbutil

REPO = Path(__file__).resolve().parent.parent


def emgd(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "--log-format", "json", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "EMGD_DATABASE_URL": db_url,
        "EMGD_STORAGE_BACKEND": "local",
        "EMGD_LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }


async def test_upload_status_requeue_round_trip(db_url, env, tmp_path):
    data, _ = ghostly_recording(seed=1, duration_s=5.0)
    path = tmp_path / "Ghostly_Emg_20261125_10-00-00-0000.c3d"
    path.write_bytes(data)
    patient = uuid.uuid4()

    up = emgd("upload", str(path), "--patient", str(patient), env=env)
    assert up.returncode == 0, up.stderr
    assert f"created local patient {patient}" in up.stdout
    stored = tmp_path / "storage" / "c3d-examples" / str(patient) / path.name
    assert stored.read_bytes() == data

    conn = await dbutil.connect(db_url)
    try:
        session = await conn.fetchrow(
            "select s.id, s.status, s.patient_id, j.state from public.sessions s"
            " join emgd.jobs j on j.session_id = s.id where s.object_name = $1",
            f"{patient}/{path.name}",
        )
        assert (session["status"], session["state"]) == ("pending", "pending")
        assert session["patient_id"] == patient, "the account exists, so the folder is known"

        status = emgd("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["queue"]["pending"] == 1

        # Fail the job the way a daemon would, then requeue it from the command line.
        owner = uuid.uuid4()
        claimed = await conn.fetchrow("select * from emgd.claim_jobs($1, 1, 30)", owner)
        await conn.execute(
            "select emgd.finish_job($1, $2, 'failed', 'bad file for the test')",
            claimed["job_id"],
            claimed["lease_token"],
        )
        status = json.loads(emgd("status", "--json", env=env).stdout)
        assert status["queue"]["failed"] == 1
        assert status["failures"][0]["reason"] == "bad file for the test"
        assert status["failures"][0]["session_id"] == str(session["id"])

        requeue = emgd("requeue", "--failed", "--since", "1 hour", env=env)
        assert requeue.returncode == 0, requeue.stderr
        assert requeue.stdout.strip() == "requeued 1 job(s)"
        state = await conn.fetchval(
            "select state from emgd.jobs where session_id = $1", session["id"]
        )
        assert state == "pending"
        again = emgd("requeue", "--session", str(session["id"]), env=env)
        assert again.stdout.strip() == "requeued 0 job(s)", "a pending job is left alone"
    finally:
        await conn.close()


def test_upload_refuses_a_missing_file_with_one_line(env, tmp_path):
    result = emgd("upload", str(tmp_path / "nope.c3d"), "--patient", str(uuid.uuid4()), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"emgd: no such file: {tmp_path / 'nope.c3d'}"]


def test_run_reports_bad_settings_by_variable_and_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMGD_")}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "run"],
        cwd=REPO,
        env={**env, "EMGD_CONCURRENCY": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "EMGD_CONCURRENCY" in result.stderr
    assert "Traceback" not in result.stderr
