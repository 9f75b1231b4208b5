"""``python -m chaos [--fast] [--only NAMES] [--keep]``: run the scenarios, print one JSON summary.

The full run (every scenario at full size) takes a few minutes on a 2-core machine; ``--fast`` is
the subset the test suite runs (1 restart, 1 crash, 3 kills, a full disk, a hung read). The exit
code is 0 when every verdict in the summary holds, 1 otherwise, 2 when the run cannot start here
(no PostgreSQL binaries).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chaos import scenarios
from chaos.cluster import Cluster, ClusterUnavailable
from chaos.harness import World, recordings, stats

REPO = Path(__file__).resolve().parent.parent
FULL = {"kills": 50, "restarts": 5, "crashes": 1, "uploads": 2000}
FAST = {"kills": 3, "restarts": 1, "crashes": 1, "uploads": 0}
ALL = ["kill9", "outages", "listener", "full_disk", "hung_read", "sigstop", "load", "rss"]
FAST_SET = ["kill9", "outages", "full_disk", "hung_read"]


async def run(names: list[str], size: dict[str, int], workdir: Path) -> dict[str, Any]:
    cluster = Cluster(workdir / "cluster")
    started = time.monotonic()
    try:
        await asyncio.to_thread(cluster.init)
        subprocess.run(
            [sys.executable, "-m", "daemon", "migrate", "--local-supabase",
             "--database-url", cluster.dsn],
            check=True, capture_output=True, cwd=REPO, timeout=300,
        )  # fmt: skip
        world = World(cluster.dsn, workdir, recordings())
        await world.setup()
        results: dict[str, Any] = {}
        for name in names:
            t = time.monotonic()
            try:
                if name == "kill9":
                    out = await scenarios.kill9(world, size["kills"])
                elif name == "outages":
                    out = await scenarios.outages(world, cluster, size["restarts"], size["crashes"])
                elif name == "listener":
                    out = await scenarios.listener_termination(world)
                elif name == "full_disk":
                    out = await scenarios.full_disk(world, cluster)
                elif name == "hung_read":
                    out = await scenarios.hung_read(world)
                elif name == "sigstop":
                    out = await scenarios.sigstop(world)
                elif name == "load":
                    out = await scenarios.load(world, size["uploads"] or 200)
                elif name == "rss":
                    out = await scenarios.rss(world)
                else:
                    raise ValueError(f"unknown scenario {name!r}")
            except ClusterUnavailable as exc:
                out = {"skipped": str(exc)}
            out["daemon_exits"] = world.unexpected_exits()
            out["wall_s"] = round(time.monotonic() - t, 1)
            await world.stop_all()
            results[name] = out
        return summarise(results, time.monotonic() - started)
    finally:
        await asyncio.to_thread(cluster.destroy)


def summarise(results: dict[str, Any], wall: float) -> dict[str, Any]:
    keys = ("uploads", "completed_exactly_once", "lost", "duplicated", "wrong_results", "failed")
    totals = {k: sum(r.get(k, 0) for r in results.values()) for k in keys}
    exits = [e for r in results.values() for e in r.get("daemon_exits", [])]
    orphan = [x for r in results.values() for x in r.pop("orphan_rerun_s", [])]
    rescued = [x for r in results.values() for x in r.pop("orphan_rescue_s", [])]
    resume = [x for r in results.values() for x in r.pop("resume_after_outage_s", [])]
    totals["daemon_exits"] = len(exits)
    totals["orphan_rescue_s"] = stats(rescued)
    totals["orphan_rerun_s"] = stats(orphan)
    totals["resume_after_outage_s"] = stats(resume)
    verdicts = {
        "no_lost_or_duplicated": totals["lost"] == 0
        and totals["duplicated"] == 0
        and totals["wrong_results"] == 0,
        "no_daemon_exits": not exits,
    }
    if "outages" in results and "uploads" in results["outages"]:
        verdicts["no_completion_undone_by_an_outage"] = (
            results["outages"]["completions_undone_by_outage"] == 0
        )
    if resume:
        verdicts["resumed_within_2s"] = max(resume) <= 2.0
    if orphan:
        verdicts["orphans_rerun_within_10s_p50_5s"] = (
            max(orphan) <= 10.0 and totals["orphan_rerun_s"]["p50"] <= 5.0
        )
    if "kill9" in results:
        verdicts["every_orphan_rescued"] = results["kill9"].get("orphans_never_rescued", 0) == 0
    disk = results.get("full_disk", {})
    if "uploads" in disk:
        verdicts["full_disk_retried_then_completed"] = (
            disk["failed_while_full"] == 0
            and disk["retried_while_full"] > 0
            and disk["completed_exactly_once"] == disk["uploads"]
        )
    hung = results.get("hung_read", {})
    if "uploads" in hung:
        verdicts["hung_read_retried_within_deadline_and_sigterm_exits"] = (
            hung.get("retried_after_s") is not None
            and hung["retried_after_s"] <= 3.0 + 3.0
            and hung.get("sigterm_exit_code") is not None
            and hung["sigterm_exit_s"] <= 3.0 + 5.0
            and hung["processes_left"] == 0
        )
    stop = results.get("sigstop", {})
    if "uploads" in stop:
        verdicts["frozen_daemon_wrote_nothing"] = (
            stop["writes_by_frozen_daemon"] == 0 and stop["completed_exactly_once"] == 1
        )
    if "rss" in results and "peak_rss_mb" in results["rss"]:
        verdicts["daemon_rss_within_250mb"] = (
            results["rss"]["both_in_flight"] and results["rss"]["peak_rss_mb"] <= 250
        )
    return {
        "totals": totals,
        "verdicts": verdicts,
        "ok": all(verdicts.values()),
        "scenarios": results,
        "wall_s": round(wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the subset the test suite runs")
    parser.add_argument("--only", help=f"comma-separated scenarios out of {','.join(ALL)}")
    parser.add_argument("--kills", type=int)
    parser.add_argument("--restarts", type=int)
    parser.add_argument("--uploads", type=int, help="uploads of the load scenario")
    ns = parser.parse_args(argv)
    size = dict(FAST if ns.fast else FULL)
    for key in ("kills", "restarts", "uploads"):
        if getattr(ns, key) is not None:
            size[key] = getattr(ns, key)
    names = ns.only.split(",") if ns.only else (FAST_SET if ns.fast else ALL)
    with tempfile.TemporaryDirectory(prefix="emgd-chaos-") as tmp:
        try:
            summary = asyncio.run(run(names, size, Path(tmp)))
        except ClusterUnavailable as exc:
            print(json.dumps({"ok": False, "skipped": str(exc)}))
            return 2
    print(json.dumps(summary, indent=1, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
