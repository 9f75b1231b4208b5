"""The chaos harness's fast subset, as CI runs it: one PostgreSQL restart, one crash (claims
commit with synchronous_commit off: nothing may be lost or completed twice), three kill -9s, a
full disk and a hung storage read, all against real ``emgd run`` processes and a PostgreSQL
cluster the harness creates. The whole harness (``python -m chaos``) is the longer version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chaos.cluster import ClusterUnavailable, find_bin
from tests.e2e_harness import REPO

pytestmark = pytest.mark.e2e


def test_the_fast_chaos_subset_loses_nothing_and_keeps_every_daemon():
    try:
        find_bin()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    if os.geteuid() != 0:
        pytest.skip("the full-disk scenario mounts a small tmpfs: run as root")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMGD_")}
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "--fast"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    summary = json.loads(done.stdout)
    totals, verdicts = summary["totals"], summary["verdicts"]
    assert totals["uploads"] > 40
    assert (totals["lost"], totals["duplicated"], totals["wrong_results"]) == (0, 0, 0), summary
    assert totals["completed_exactly_once"] == totals["uploads"], summary
    assert totals["daemon_exits"] == 0, summary
    assert summary["scenarios"]["outages"]["crashes"] == 1
    assert totals["resume_after_outage_s"]["n"] == 2
    assert totals["orphan_rescue_s"]["n"] == 3
    assert all(verdicts.values()), json.dumps(summary, indent=1)
