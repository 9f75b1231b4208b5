"""``emgd demo``: the whole product on one machine, from nothing, in a few seconds.

Starts an embedded PostgreSQL in a temporary folder (or ``--dir``), applies the Supabase stand-in
and the migrations, creates a therapist and two patients, writes synthetic GHOSTLY recordings with
known contractions, uploads them the way Supabase Storage does, runs the real daemon until every
session is processed, prints the results per session, and exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# The demo's results table: queries.SESSION_SUMMARIES plus what a channel's line needs to show
# amplitudes in µV and an unusable channel's warnings.
SESSION_SUMMARIES = """
    select s.id, s.object_name, s.status, s.error, s.game_name, s.overall_compliance,
           u.display_name as patient,
           p.name as channel, p.unit, p.usable, p.warnings, p.contractions_total,
           p.contractions_good, p.mvc_value, p.mpf_hz, p.mdf_hz, p.compliance_rate
    from public.sessions s
    left join public.users u on u.id = s.patient_id
    left join public.session_parameters p on p.session_id = s.id
    where s.id = any($1::uuid[])
    order by s.object_name, p.name
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None, help="keep database and files here")
    parser.add_argument("--sessions", type=int, default=4, help="synthetic recordings to upload")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per recording")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this long")


async def _seed_users(conn) -> tuple[str, list[tuple[str, str]]]:
    import uuid

    from daemon import queries

    async def user(role: str, name: str) -> str:
        uid = str(uuid.uuid4())
        await conn.execute(queries.INSERT_AUTH_USER, uid, f"{name.lower()}@demo.test", role, name)
        await conn.execute(queries.UPSERT_PROFILE, uid, role, name)
        return uid

    therapist = await user("therapist", "Therapist Tess")
    patients = [(await user("patient", name), name) for name in ("Patient Ada", "Patient Bo")]
    for pid, _ in patients:
        await conn.execute(queries.ASSIGN_PATIENT, therapist, pid)
    return therapist, patients


async def demo(settings, dsn: str, args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    import asyncpg

    from daemon import queries
    from daemon.cmd_upload import upload
    from daemon.runtime import serve
    from emg_core.synthetic import ghostly_recording

    conn = await asyncpg.connect(dsn)
    try:
        _therapist, patients = await _seed_users(conn)
    finally:
        await conn.close()

    truths: dict[str, int] = {}
    sessions: list[uuid.UUID] = []
    for i in range(args.sessions):
        patient, _ = patients[i % len(patients)]
        data, truth = ghostly_recording(seed=i, duration_s=args.duration)
        name = f"Ghostly_Emg_20261125_{10 + i:02d}-00-00-0000.c3d"
        session = await upload(settings, dsn, data, uuid.UUID(patient), name)
        sessions.append(uuid.UUID(session))
        truths[session] = truth
    print(f"uploaded {len(sessions)} synthetic GHOSTLY sessions; processing...", flush=True)

    started: list = []
    daemon_task = asyncio.create_task(serve(settings, dsn, on_started=started.append))
    conn = await asyncpg.connect(dsn)
    try:
        deadline = asyncio.get_running_loop().time() + args.timeout
        while True:
            if daemon_task.done():
                print("emgd: the daemon stopped early", flush=True)
                return daemon_task.result() or 1
            rows = await conn.fetch(queries.SESSION_STATES, sessions)
            if rows and all(r["status"] in ("completed", "failed") for r in rows):
                break
            if asyncio.get_running_loop().time() > deadline:
                print("emgd: timed out waiting for results", flush=True)
                break
            await asyncio.sleep(0.1)
        rows = await conn.fetch(SESSION_SUMMARIES, sessions)
    finally:
        await conn.close()
        if started:
            started[0].request_stop()
        await daemon_task
    print(render(rows, truths))
    return 0 if all(r["status"] == "completed" for r in rows) else 1


def render(rows, truths) -> str:
    """One line per session and channel, then each channel's warnings.

    Amplitudes are in µV for channels in V or mV; an unusable channel has no counts ('-').
    """
    from daemon.cmd_analyze import amplitude_text, display_unit

    def num(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = (
        f"{'patient':<12} {'file':<38} {'status':<9} {'channel':<8} {'found':>5} {'truth':>5}"
        f" {'good':>4} {'MVC':>11} {'MPF Hz':>7} {'MDF Hz':>7}"
    )
    lines = [header, "-" * len(header)]
    notes: list[str] = []
    for r in rows:
        truth = truths.get(str(r["id"]))
        expected = _truth_count(truth, r["channel"]) if truth is not None else None
        file = r["object_name"].rsplit("/", 1)[-1]
        if r["status"] != "completed":
            who = r["patient"] or "-"
            lines.append(f"{who:<12} {file:<38} {r['status']:<9} {r['error'] or ''}")
            continue
        unit, scale = display_unit(r["unit"] or "")
        mvc = "-" if r["mvc_value"] is None else f"{amplitude_text(r['mvc_value'], scale)} {unit}"
        line = (
            f"{r['patient']:<12} {file:<38} {r['status']:<9} {r['channel']:<8}"
            f" {num(r['contractions_total'], 'd'):>5} {num(expected, 'd'):>5}"
            f" {num(r['contractions_good'], 'd'):>4} {mvc:>11} {num(r['mpf_hz'], '.1f'):>7}"
            f" {num(r['mdf_hz'], '.1f'):>7}"
        )
        lines.append(line if r["usable"] is not False else line + "  unusable")
        notes += [f"    {file} {r['channel']}: {w}" for w in r["warnings"] or ()]
    if notes:
        lines += ["", "warnings:", *notes]
    return "\n".join(lines)


def _truth_count(truth, channel: str) -> int | None:
    bursts = getattr(truth, "bursts", None)
    if bursts is None:
        return None
    by_channel = [b for b in bursts if getattr(b, "channel", None) in (channel, channel.split()[0])]
    return len(by_channel) if by_channel else None


def main(args: argparse.Namespace) -> int:
    import asyncio
    import shutil
    import tempfile

    from daemon.runtime import embedded_database
    from daemon.settings import load_settings

    root = args.dir or Path(tempfile.mkdtemp(prefix="emgd-demo-"))
    settings = load_settings(
        embedded=True,
        embedded_dir=root / "pg",
        storage_backend="local",
        local_storage_dir=root / "storage",
        health_port=0,
        poll_interval=0.5,
    )
    try:
        with embedded_database(settings) as dsn:
            return asyncio.run(demo(settings, dsn, args))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
