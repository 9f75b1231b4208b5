"""``emgd demo``: the whole product on one machine, from nothing, in a few seconds.

Starts an embedded PostgreSQL in a temporary folder (or ``--dir``), applies the Supabase stand-in
and the migrations, creates a therapist and two patients, writes synthetic GHOSTLY recordings with
known contractions, uploads them the way Supabase Storage does, runs the real daemon until every
session is processed and has its report picture, and prints the results per session. Then the
therapist, signed in as the app would sign her in, sets the first patient's MVC per channel: the
daemon reanalyses exactly that patient's sessions, and the results are printed again.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # asyncpg, emg_core and the daemon load inside main(): `emgd --help` stays fast
    from daemon.settings import Settings
    from emg_core.synthetic import GroundTruth

# The demo's results table: the sessions with their channels, plus what a channel's line needs to
# show amplitudes in µV and an unusable channel's warnings.
SESSION_SUMMARIES = """
    select s.id, s.object_name, s.status, s.error, s.game_name, s.overall_compliance,
           u.display_name as patient,
           p.name as channel, p.unit, p.usable, p.warnings, p.contractions_total,
           p.contractions_good, p.mvc_value, p.mpf_hz, p.mdf_hz, p.compliance_rate,
           p.contractions_mvc_compliant, p.mvc_method, s.report_path, s.processed_at,
           s.bucket_id
    from public.sessions s
    left join public.users u on u.id = s.patient_id
    left join public.session_parameters p on p.session_id = s.id
    where s.id = any($1::uuid[])
    order by s.object_name, p.name
"""


# Done: completed with its picture recorded, or failed.
SESSIONS_DONE = """
    select id, status, report_path, processed_at from public.sessions where id = any($1::uuid[])
"""
# The therapist's request as the app sends it through the API: her role and JWT claims, so the
# row level security that guards patient_emg_settings decides, not the demo's superuser.
ACT_AS = """
    select set_config('role', 'authenticated', true),
           set_config('request.jwt.claims', json_build_object('sub', $1::text,
               'role', 'authenticated')::text, true)
"""
SET_PATIENT_MVC = """
    insert into public.patient_emg_settings (patient_id, channel, mvc_value, mvc_unit)
    values ($1::uuid, $2::text, $3::float8, $4::text)
    on conflict (patient_id, channel) do update
    set mvc_value = excluded.mvc_value, mvc_unit = excluded.mvc_unit
"""
# The patient's channels and the MVC each session estimated for itself.
ESTIMATED_MVC = """
    select p.name, p.unit, min(p.mvc_value) as mvc_value
    from public.session_parameters p join public.sessions s on s.id = p.session_id
    where s.patient_id = $1::uuid and p.usable and p.mvc_value > 0
    group by p.name, p.unit order by p.name
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None, help="keep database and files here")
    parser.add_argument("--sessions", type=int, default=4, help="synthetic recordings to upload")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per recording")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this long")


async def _seed_users(conn: Any) -> tuple[str, list[tuple[str, str]]]:
    from daemon.local import assign, create_user

    async def user(role: str, name: str) -> str:
        return await create_user(conn, role, name, email=f"{name.lower()}@demo.test")

    therapist = await user("therapist", "Therapist Tess")
    patients = [(await user("patient", name), name) for name in ("Patient Ada", "Patient Bo")]
    for pid, _ in patients:
        await assign(conn, therapist, pid)
    return therapist, patients


async def demo(settings: Settings, dsn: str, args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    import asyncpg

    from daemon.local import upload
    from daemon.runtime import serve
    from emg_core.synthetic import ghostly_recording

    conn = await asyncpg.connect(dsn)
    try:
        therapist, patients = await _seed_users(conn)
    finally:
        await conn.close()

    truths: dict[str, GroundTruth] = {}
    sessions: list[uuid.UUID] = []
    for i in range(args.sessions):
        patient, _ = patients[i % len(patients)]
        data, truth = ghostly_recording(seed=i, duration_s=args.duration)
        name = f"Ghostly_Emg_20261125_{10 + i:02d}-00-00-0000.c3d"
        session = await upload(settings, dsn, data, uuid.UUID(patient), name)
        sessions.append(uuid.UUID(session))
        truths[session] = truth
    print(f"uploaded {len(sessions)} synthetic GHOSTLY sessions; processing...", flush=True)

    started: list[Any] = []
    daemon_task = asyncio.create_task(serve(settings, dsn, on_started=started.append))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout

    async def wait_done(conn: Any, renewed: dict[str, object] | None = None) -> bool:
        """Every session completed with its picture, or failed; the sessions in ``renewed``
        with results newer than the ones listed there. False when the daemon stopped or time
        ran out."""
        renewed = renewed or {}
        while True:
            if daemon_task.done():
                print("emgd: the daemon stopped early", flush=True)
                return False
            rows = await conn.fetch(SESSIONS_DONE, sessions)
            if rows and all(
                r["status"] == "failed"
                or (
                    r["status"] == "completed"
                    and r["report_path"] is not None
                    and r["processed_at"] != renewed.get(str(r["id"]))
                )
                for r in rows
            ):
                return True
            if loop.time() > deadline:
                print("emgd: timed out waiting for results", flush=True)
                return False
            await asyncio.sleep(0.1)

    conn = await asyncpg.connect(dsn)
    try:
        ok = await wait_done(conn)
        rows = await conn.fetch(SESSION_SUMMARIES, sessions)
        print(render(rows, truths))
        print(_pictures(rows, settings))
        ok = ok and all(r["status"] == "completed" for r in rows)
        if ok:
            patient, name = patients[0]
            before = {str(r["id"]): r["processed_at"] for r in rows}
            changes = await _therapist_sets_mvc(conn, therapist, patient)
            print(
                f"\n{_THERAPIST} sets {name}'s MVC ({changes}); the daemon reanalyses "
                f"{name}'s sessions only...",
                flush=True,
            )
            ok = await wait_done(
                conn, {k: v for k, v in before.items() if k in _sessions_of(rows, name)}
            )
            rows = await conn.fetch(SESSION_SUMMARIES, sessions)
            print(render(rows, truths))
            ok = ok and all(
                (r["processed_at"] != before[str(r["id"])]) == (r["patient"] == name) for r in rows
            )
    finally:
        await conn.close()
        if started:
            started[0].request_stop()
        await daemon_task
    return 0 if ok and all(r["status"] == "completed" for r in rows) else 1


_THERAPIST = "Therapist Tess"


def _sessions_of(rows: list[Any], patient_name: str) -> set[str]:
    return {str(r["id"]) for r in rows if r["patient"] == patient_name}


async def _therapist_sets_mvc(conn: Any, therapist: str, patient: str) -> str:
    """As the therapist (her JWT, under RLS): each channel's MVC at 60 % of the lowest her
    patient's sessions estimated for themselves, as after a weaker assessment day."""
    from daemon.cmd_analyze import amplitude_text, display_unit

    estimates = await conn.fetch(ESTIMATED_MVC, patient)
    said = []
    async with conn.transaction():
        await conn.execute(ACT_AS, therapist)
        for e in estimates:
            value = round(0.6 * e["mvc_value"], 9)
            await conn.execute(SET_PATIENT_MVC, patient, e["name"], value, e["unit"] or "V")
            unit, scale = display_unit(e["unit"] or "")
            said.append(f"{e['name']} {amplitude_text(value, scale)} {unit}")
    return ", ".join(said)


def _pictures(rows: list[Any], settings: Settings) -> str:
    paths = sorted({(r["bucket_id"], r["report_path"]) for r in rows if r["report_path"]})
    lines = [f"report pictures ({len(paths)}), stored beside the recordings:"]
    lines += [f"    {settings.local_storage_dir / bucket / p}" for bucket, p in paths]
    return "\n".join(lines)


def render(rows: list[Any], truths: dict[str, GroundTruth]) -> str:
    """One line per session and channel, then each channel's warnings.

    Amplitudes are in µV for channels in V or mV; an unusable channel has no counts ('-').
    """
    from daemon.cmd_analyze import amplitude_text, display_unit

    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = (
        f"{'patient':<12} {'file':<38} {'status':<9} {'channel':<8} {'found':>5} {'truth':>5}"
        f" {'good':>4} {'MVC':>11} {'MPF Hz':>7} {'MDF Hz':>7} {'>=MVC':>5} MVC from"
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
            f" {num(r['mdf_hz'], '.1f'):>7} {num(r.get('contractions_mvc_compliant'), 'd'):>5}"
            f" {_METHOD.get(r.get('mvc_method'), r.get('mvc_method') or '-')}"
        )
        lines.append(line if r["usable"] is not False else line + "  unusable")
        notes += [f"    {file} {r['channel']}: {w}" for w in r["warnings"] or ()]
    if notes:
        lines += ["", "warnings:", *notes]
    return "\n".join(lines)


_METHOD = {
    "session_estimate": "session (relative)",
    "patient_settings": "therapist",
    "reference_session": "reference session",
    "c3d_file": "recording",
}


def _truth_count(truth: GroundTruth, channel: str) -> int | None:
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
