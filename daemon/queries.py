"""Every SQL statement the daemon sends, named.

The logic lives in SQL functions (supabase/migrations); this module only names the calls, so a
reader can see the daemon's whole conversation with PostgreSQL in one screen.
"""

from __future__ import annotations

LISTEN_CHANNEL = "emgd_jobs"
PROBE_CHANNEL = "emgd_probe"

CLAIM_JOBS = "select * from emgd.claim_jobs($1::uuid, $2::int, $3::float8)"
HEARTBEAT = "select emgd.heartbeat($1::uuid, $2::bigint[], $3::float8) as job_id"
RESCUE_EXPIRED = "select emgd.rescue_expired()"
# on the daemon's own connection: a lock the database frees when the process dies
HOLD_OWNER_LOCK = "select emgd.hold_owner_lock($1::uuid)"
# seconds until the earliest pending job is due (a retry's backoff), or null with none pending
NEXT_DUE_IN = (
    "select extract(epoch from min(run_after) - clock_timestamp())::float8"
    " from emgd.jobs where state = 'pending'"
)
SET_STAGE = "select emgd.set_stage($1::bigint, $2::uuid, $3::text, $4::real)"
COMPLETE_JOB = "select emgd.complete_job($1::bigint, $2::uuid, $3::jsonb, $4::text, $5::bigint)"
REUSE_OR_STAGE = (
    "select emgd.reuse_or_stage($1::bigint, $2::uuid, $3::text, $4::bigint, $5::text, $6::jsonb,"
    " $7::text, $8::real)"
)
FINISH_JOB = (
    "select emgd.finish_job($1::bigint, $2::uuid, $3::text, $4::text,"
    " make_interval(secs => $5::float8), $6::boolean)"
)
RELEASE_JOB = "select emgd.release_job($1::bigint, $2::uuid)"
CATCH_UP = "select emgd.catch_up()"
QUEUE_DEPTH = "select state, jobs, oldest from emgd.queue_depth()"
PING = "select 1"
PROBE_NOTIFY = "select pg_notify($1::text, $2::text)"

# status / requeue verbs
RECENT_FAILURES = """
    select s.id as session_id, s.bucket_id, s.object_name, j.state, j.attempts, j.crashes,
           j.last_error, j.finished_at
    from emgd.jobs j join public.sessions s on s.id = j.session_id
    where j.state in ('failed', 'quarantined')
    order by j.finished_at desc nulls last
    limit $1::int
"""
REQUEUE_ONE = "select emgd.requeue($1::uuid)"
REQUEUE_FAILED = "select emgd.requeue_failed($1::text::interval)"
REPROCESS_ALL = "select emgd.reprocess_all()"

# upload verb (local storage mode): the row Supabase Storage itself inserts after storing the bytes
INSERT_STORAGE_OBJECT = """
    insert into storage.objects (bucket_id, name, owner, owner_id, metadata, version, user_metadata)
    values ($1::text, $2::text, $3::uuid, $3::text, $4::jsonb, $5::text, '{}'::jsonb)
    on conflict (bucket_id, name) do update
        set metadata = excluded.metadata, version = excluded.version, updated_at = now(),
            owner = excluded.owner, owner_id = excluded.owner_id
    returning id
"""
# local mode has no Supabase Auth: an upload for an unknown patient creates the account locally
ENSURE_LOCAL_PATIENT = """
    with new_user as (
        insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
        values ($1::uuid, 'authenticated', 'authenticated', $1::text || '@local.invalid',
                '{"provider": "local", "role": "patient"}'::jsonb, '{}'::jsonb)
        on conflict (id) do nothing
        returning id
    )
    insert into public.users (id, role, display_name)
    select id, 'patient', 'patient ' || left(id::text, 8) from new_user
    on conflict (id) do nothing
    returning id
"""
SESSION_FOR_OBJECT = """
    select s.id, s.status, s.stage, s.error from public.sessions s
    where s.bucket_id = $1::text and s.object_name = $2::text
"""

# demo verb: users as Supabase Auth creates them, with their profile and assignment
INSERT_AUTH_USER = """
    insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data)
    values ($1::uuid, 'authenticated', 'authenticated', $2::text,
            jsonb_build_object('provider', 'email', 'role', $3::text),
            jsonb_build_object('display_name', $4::text))
"""
UPSERT_PROFILE = """
    insert into public.users (id, role, display_name) values ($1::uuid, $2::text, $3::text)
    on conflict (id) do update set role = excluded.role, display_name = excluded.display_name
"""
ASSIGN_PATIENT = """
    insert into public.therapist_patients (therapist_id, patient_id, active)
    values ($1::uuid, $2::uuid, true)
    on conflict (therapist_id, patient_id) do update set active = true
"""
SESSION_SUMMARIES = """
    select s.id, s.object_name, s.status, s.error, s.game_name, s.overall_compliance,
           u.display_name as patient,
           p.name as channel, p.contractions_total, p.contractions_good, p.mvc_value,
           p.mpf_hz, p.mdf_hz, p.compliance_rate
    from public.sessions s
    left join public.users u on u.id = s.patient_id
    left join public.session_parameters p on p.session_id = s.id
    where s.id = any($1::uuid[])
    order by s.object_name, p.name
"""
SESSION_STATES = "select id, status from public.sessions where id = any($1::uuid[])"
