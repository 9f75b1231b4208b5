"""SQL the local mode and the demo send, named.

The daemon's conversation with the job queue lives in ``daemon/queue.py``; what is left here
does what Supabase itself does in production (store an object's row, create accounts) and the
demo's reads of its results.
"""

from __future__ import annotations

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
