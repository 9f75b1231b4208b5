"""The operator page: ``GET /`` on the health port, one HTML page that refreshes itself.

What an operator looks at first: is this daemon ready, is work getting through, what failed and
why. The page shows the queue (jobs by state, the oldest pending job's age, jobs ended per minute
over the last minutes, what is running now), recent failures with their reasons, the listener's
mode, and this daemon's job slots and analysis workers. The queue figures are the database's, so
every daemon's page shows the same queue; the listener and the workers are this daemon's own.

No patient data: a session appears by its id only. The sessions' names, game metadata and object
paths (``<patient uuid>/<file name>``) are never read for the page, and a failure reason that
quotes its object (storage errors do) shows ``<object>`` in its place. Like ``/readyz`` the page
gives states and counts, not error texts (which can quote anything): a database that does not
answer is named by the kind of error, its words go to the log. The reads go through the queue
module (``JobQueue``); this module only arranges and escapes what they return.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import html
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from daemon.queue import FailedJob, JobQueue, RunningJob

__all__ = ["Activity", "Failure", "Snapshot", "page", "redact", "render", "snapshot"]

log = structlog.get_logger(__name__)

#: the page reloads itself this often (seconds)
REFRESH_S = 5
#: the throughput chart's span, in minutes (the current minute included)
THROUGHPUT_MINUTES = 15
FAILURES_SHOWN = 10
RUNNING_SHOWN = 20
#: the page is for a glance: a database slower than this is reported, not waited for
DB_TIMEOUT_S = 5.0
#: the queue's states in their life order (docs/jobs.md)
STATES = ("pending", "running", "succeeded", "failed", "quarantined")
ENDED = ("succeeded", "failed", "quarantined")
OBJECT = "<object>"


@dataclass(frozen=True, slots=True)
class Activity:
    """What this daemon knows of itself (``Daemon.activity()``)."""

    owner: str  # tells this daemon's running jobs from others' (not shown)
    ready: bool
    not_ready: Mapping[str, str]
    listener_mode: str
    concurrency: int
    in_flight: int
    draining: bool
    #: ``AnalysisPool.stats()``; None when the analysis runs without a worker pool
    workers: Mapping[str, int] | None


@dataclass(frozen=True, slots=True)
class Failure:
    session_id: str
    state: str
    attempts: int
    crashes: int
    reason: str  # redacted: no object path, patient folder or file name
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    now: dt.datetime
    activity: Activity
    depth: Mapping[str, int]
    oldest_pending: dt.datetime | None
    #: every minute of the span, oldest first: (its start, {ended state: jobs})
    minutes: tuple[tuple[dt.datetime, Mapping[str, int]], ...]
    running: tuple[RunningJob, ...]
    failures: tuple[Failure, ...]
    database_error: str | None = None


def redact(reason: str, bucket: str, object_name: str) -> str:
    """``reason`` without its object's path, patient folder or file name."""
    folder, _, file_name = object_name.rpartition("/")
    patient = folder.split("/", 1)[0]
    # longest first, so a path is replaced whole rather than piece by piece; very short pieces
    # ("a.c3d" is five characters) would match ordinary words, and are left alone
    for secret in (f"{bucket}/{object_name}", object_name, folder, patient, file_name):
        if len(secret) >= 5:
            reason = reason.replace(secret, OBJECT)
    return reason


def _failure(job: FailedJob) -> Failure:
    return Failure(
        session_id=job.session_id,
        state=job.state,
        attempts=job.attempts,
        crashes=job.crashes,
        reason=redact(job.last_error or "", job.bucket_id, job.object_name),
        finished_at=job.finished_at,
    )


async def snapshot(
    queue: JobQueue,
    activity: Activity,
    *,
    minutes: int = THROUGHPUT_MINUTES,
    failures: int = FAILURES_SHOWN,
    running: int = RUNNING_SHOWN,
) -> Snapshot:
    """The page's figures: the queue's from the database, the rest from ``activity``."""
    now = dt.datetime.now(dt.UTC)
    this_minute = now.replace(second=0, microsecond=0)
    span = [this_minute - dt.timedelta(minutes=k) for k in range(minutes - 1, -1, -1)]
    empty = Snapshot(now, activity, {}, None, tuple((m, {}) for m in span), (), ())
    try:
        async with asyncio.timeout(DB_TIMEOUT_S):
            depth = await queue.queue_depth()
            ended = await queue.throughput(minutes)
            now_running = await queue.running_jobs(running)
            failed = await queue.recent_failures(failures)
    # Whatever the database does (down, slow, a missing function), the page still shows the
    # daemon's own state, which is what an operator needs most in exactly that moment.
    except Exception as exc:
        log.warning("operator_page_database_failed", error=repr(exc))
        problem = (
            f"no answer within {DB_TIMEOUT_S:g} s"
            if isinstance(exc, TimeoutError)
            else f"query failed ({type(exc).__name__})"
        )
        return dataclasses.replace(empty, database_error=problem)
    per_minute: dict[dt.datetime, dict[str, int]] = {m: {} for m in span}
    for row in ended:
        if row.minute in per_minute:
            per_minute[row.minute][row.state] = row.jobs
    pending = next((d for d in depth if d.state == "pending"), None)
    return Snapshot(
        now=now,
        activity=activity,
        depth={d.state: d.jobs for d in depth},
        oldest_pending=pending.oldest if pending is not None and pending.jobs else None,
        minutes=tuple(per_minute.items()),
        running=tuple(now_running),
        failures=tuple(_failure(f) for f in failed),
    )


async def page(queue: JobQueue, activity: Activity) -> str:
    return render(await snapshot(queue, activity))


# -- HTML ----------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def age_text(seconds: float) -> str:
    """``42 s``, ``3 min 12 s``, ``2 h 05 min``, ``3 d 04 h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def _ago(now: dt.datetime, then: dt.datetime | None) -> str:
    return "-" if then is None else age_text((now - then).total_seconds())


def _table(head: tuple[str, ...], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _status(s: Snapshot) -> str:
    a = s.activity
    badge = "ready" if a.ready else "not ready"
    reasons = "".join(
        f"<li><b>{_e(what)}</b>: {_e(why)}</li>" for what, why in sorted(a.not_ready.items())
    )
    db = (
        f'<p class="problem" id="database-error">Database: {_e(s.database_error)}</p>'
        if s.database_error
        else ""
    )
    return (
        f'<header><h1>emgd</h1><span id="readiness" class="badge {"ok" if a.ready else "bad"}">'
        f"{badge}</span>"
        f'<span class="meta">{_e(s.now.strftime("%Y-%m-%d %H:%M:%S"))} UTC'
        f" · refreshes every {REFRESH_S} s</span></header>"
        + (f'<ul class="problem" id="not-ready">{reasons}</ul>' if reasons else "")
        + db
    )


def _queue(s: Snapshot) -> str:
    if s.database_error:
        return '<section id="queue"><h2>Queue</h2><p class="empty">unknown</p></section>'
    rows = "".join(
        f'<tr><th>{_e(state)}</th><td class="num" data-state="{_e(state)}">'
        f"{s.depth.get(state, 0)}</td></tr>"
        for state in STATES
    )
    oldest = (
        "none pending"
        if s.oldest_pending is None
        else f"{_ago(s.now, s.oldest_pending)} (created {s.oldest_pending:%H:%M:%S} UTC)"
    )
    return (
        f'<section id="queue"><h2>Queue</h2><table class="depth"><tbody>{rows}</tbody></table>'
        f'<p>Oldest pending job: <b id="oldest-pending">{_e(oldest)}</b></p></section>'
    )


def _throughput(s: Snapshot) -> str:
    totals = {state: sum(c.get(state, 0) for _, c in s.minutes) for state in ENDED}
    total = sum(totals.values())
    top = max((sum(c.values()) for _, c in s.minutes), default=0) or 1
    rows = []
    for minute, counts in s.minutes:
        bars = "".join(
            f'<span class="bar {state}" style="width:{100 * counts.get(state, 0) / top:.1f}%"'
            f' title="{counts.get(state, 0)} {state}"></span>'
            for state in ENDED
        )
        rows.append(
            f'<tr data-minute="{minute:%H:%M}"><th>{minute:%H:%M}</th>'
            + "".join(f'<td class="num">{counts.get(state, 0)}</td>' for state in ENDED)
            + f'<td class="bars">{bars}</td></tr>'
        )
    n = len(s.minutes)
    summary = (
        f'<p id="throughput-summary">{total} jobs ended in the last {n} minutes'
        f" ({total / n:.1f} per minute): "
        + ", ".join(f"{totals[state]} {state}" for state in ENDED)
        + "</p>"
    )
    return (
        f'<section id="throughput"><h2>Throughput, last {n} minutes</h2>'
        + ("" if s.database_error else summary)
        + _table(("minute (UTC)", *ENDED, ""), rows, "unknown")
        + "</section>"
    )


def _running(s: Snapshot) -> str:
    me = s.activity.owner
    rows = [
        f'<tr><td class="id">{_e(j.session_id)}</td><td>{_e(j.stage)}</td>'
        f"<td>{_e(_ago(s.now, j.started_at))}</td><td class='num'>{j.attempts}</td>"
        f"<td>{'this daemon' if j.owner == me else 'another daemon'}</td></tr>"
        for j in s.running
    ]
    return (
        '<section id="running"><h2>Running now</h2>'
        + _table(("session", "stage", "for", "attempt", "on"), rows, "nothing is running")
        + "</section>"
    )


def _failures(s: Snapshot) -> str:
    rows = [
        f'<tr><td class="id">{_e(f.session_id)}</td><td>{_e(f.state)}</td>'
        f'<td class="num">{f.attempts}</td>'
        f'<td class="when">{_e(_ago(s.now, f.finished_at))} ago</td>'
        f'<td class="reason">{_e(f.reason)}</td></tr>'
        for f in s.failures
    ]
    return (
        '<section id="failures"><h2>Recent failures</h2>'
        + _table(("session", "state", "attempts", "ended", "reason"), rows, "no failures")
        + "</section>"
    )


def _daemon(s: Snapshot) -> str:
    a = s.activity
    listener = f'<p>Mode: <b id="listener-mode">{_e(a.listener_mode)}</b></p>'
    slots = (
        f'<p>Job slots: <b id="slots">{a.in_flight} of {a.concurrency} in use</b>'
        + (" — draining: claims nothing new" if a.draining else "")
        + "</p>"
    )
    if a.workers is None:
        workers = '<p id="workers">Analysis in this process (no worker pool)</p>'
    else:
        w = a.workers
        busy = max(0, w["size"] - w["idle"] - w["starting"])
        workers = (
            f'<p>Analysis workers: <b id="workers">{w["size"]} ({w["idle"]} idle, {busy} busy,'
            f" {w['starting']} starting)</b></p><p>{w['jobs']} analyses run;"
            f" {w['restarts']} workers replaced after a crash or timeout</p>"
        )
    return (
        f'<div><section id="listener"><h2>Listener</h2>{listener}</section>'
        f'<section id="workers-state"><h2>This daemon</h2>{slots}{workers}</section></div>'
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}
header{display:flex;align-items:baseline;gap:1em;flex-wrap:wrap}
h1{margin:0;font-size:1.6em} h2{font-size:1.1em;margin:1.4em 0 .4em}
.badge{padding:.1em .6em;border-radius:1em;color:#fff;font-weight:bold}
.ok{background:#2e7d32} .bad{background:#c62828} .meta{color:#666}
.problem{color:#c62828} .empty{color:#666;font-style:italic}
table{border-collapse:collapse} th,td{padding:.2em .8em;text-align:left;vertical-align:top}
thead th{border-bottom:1px solid #ccc;font-weight:600}
tbody tr:nth-child(even){background:#f6f6f6} .num{text-align:right}
.id{font-family:ui-monospace,monospace;font-size:.9em;white-space:nowrap}
.when{white-space:nowrap} .reason{max-width:40em}
.cards{display:flex;gap:3em;flex-wrap:wrap} .cards>div>section>h2,.cards>section>h2{margin-top:1em}
.bars{width:16em} .bar{display:inline-block;height:.8em}
.succeeded{background:#66bb6a} .failed{background:#ef5350} .quarantined{background:#8d6e63}
.depth th{font-weight:normal}
"""


def render(s: Snapshot) -> str:
    """The whole page; every value from the database or the daemon is escaped."""
    title = "emgd · " + ("ready" if s.activity.ready else "not ready")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        + _status(s)
        + f'<div class="cards">{_queue(s)}{_daemon(s)}</div>'
        + _throughput(s)
        + _running(s)
        + _failures(s)
        + "</body></html>"
    )
