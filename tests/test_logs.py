"""Logging: JSON off a terminal, bound context on every line, env fallbacks, stdlib routed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import logging, structlog
from daemon import logs
logs.configure(None, None)
log = structlog.get_logger("emgd.test")
with structlog.contextvars.bound_contextvars(job_id=42):
    log.info("job_started", session_id="s1")
    log.debug("too_detailed")
    logging.getLogger("aiohttp.server").warning("library says %s", "hi")
log.warning("outside_job")
"""


def run(env: dict[str, str]) -> list[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EMGD_LOG")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=full, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # logs never pollute stdout (JSON output of `emgd analyze`)
    return proc.stderr.splitlines()


def test_auto_is_json_off_a_terminal_with_job_id_bound():
    lines = [json.loads(line) for line in run({})]
    assert [e["event"] for e in lines] == ["job_started", "library says hi", "outside_job"]
    assert lines[0]["job_id"] == 42 and lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[1]["job_id"] == 42 and lines[1]["logger"] == "aiohttp.server"
    assert "job_id" not in lines[2]


def test_env_level_and_console_format():
    lines = run({"EMGD_LOG_LEVEL": "debug", "EMGD_LOG_FORMAT": "console"})
    assert any("too_detailed" in line for line in lines)
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    assert "job_id=42" in lines[0]


def test_bad_format_is_rejected():
    from daemon import logs

    with pytest.raises(ValueError, match="auto, json or console"):
        logs.configure("xml", None)
