"""The pgTAP suite under supabase/tests (what `supabase test db` runs), run here with pg_prove
against a migrated database, so the SQL statement of the security model is checked with the rest.

pg_prove and the pgtap extension come from the Debian packages
libtap-parser-sourcehandler-pgtap-perl and postgresql-15-pgtap (.ci/run installs them; the README
says how). Where they cannot exist (no pg_prove on this machine, or a server without the
extension, such as the embedded one) the test skips saying which; with EMGD_REQUIRE_PGTAP set
(CI, once it installed them) it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import dbutil

SUITE = Path(__file__).resolve().parent.parent / "supabase" / "tests"


def unavailable(reason: str) -> None:
    if os.environ.get("EMGD_REQUIRE_PGTAP"):
        pytest.fail(f"{reason}, and EMGD_REQUIRE_PGTAP is set")
    pytest.skip(
        f"{reason} (apt-get install postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl)"
    )


def test_the_pgtap_suite_passes(database_factory):
    files = sorted(str(p) for p in SUITE.glob("*.test.sql"))
    assert len(files) >= 4, files
    if shutil.which("pg_prove") is None:
        unavailable("pg_prove is not installed")
    url = database_factory()

    async def has_pgtap() -> bool:
        conn = await dbutil.connect(url)
        try:
            return bool(
                await conn.fetchval(
                    "select count(*) from pg_available_extensions where name = 'pgtap'"
                )
            )
        finally:
            await conn.close()

    if not dbutil.run_sync(has_pgtap):
        unavailable("the test server has no pgtap extension")
    proc = subprocess.run(
        ["pg_prove", "--dbname", url, *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All tests successful" in proc.stdout
