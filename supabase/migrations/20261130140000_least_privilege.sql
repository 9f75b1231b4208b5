-- Least privilege: who may write into the C3D bucket, policy helpers out of the API's reach,
-- errors that tell a non-admin nothing about other users, no sequence privileges for the API
-- roles, and a bucket that refuses what cannot be a recording. docs/security.md has the model.

-- ---------------------------------------------------------------------------------------------
-- policy helpers live in a schema PostgREST does not expose
-- ---------------------------------------------------------------------------------------------

-- SECURITY DEFINER functions in `public` are callable as RPCs (/rest/v1/rpc/is_admin ...).
-- Policies need them (to read users and assignments without those tables' own policies
-- recursing), the API does not. `emgd_private` is never listed in the Data API's exposed
-- schemas; authenticated gets USAGE only so its policies can call them.
create schema if not exists emgd_private;
comment on schema emgd_private is
    'Helpers RLS policies call (SECURITY DEFINER); never add it to the Data API''s exposed schemas';
revoke all on schema emgd_private from public;
grant usage on schema emgd_private to authenticated, service_role;

-- Moving keeps each function's oid, so the policies that use them follow without being rebuilt.
alter function public.current_user_role() set schema emgd_private;
alter function public.is_admin() set schema emgd_private;
alter function public.is_therapist_of(uuid) set schema emgd_private;
alter function public.can_read_patient(uuid) set schema emgd_private;

-- Its body named the other helpers by their old schema; SQL bodies are resolved at call time.
create or replace function emgd_private.can_read_patient(patient_id uuid) returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select can_read_patient.patient_id is not null
           and (can_read_patient.patient_id = (select auth.uid())
                or emgd_private.is_therapist_of(can_read_patient.patient_id))
        or emgd_private.is_admin()
$$;

-- A recording in a patient's folder may be replaced (overwritten, moved) only by that patient or
-- an admin: a therapist's upload must never change the recording, and so the results, a patient
-- already has.
create function emgd_private.can_replace_recording(patient_id uuid) returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select (can_replace_recording.patient_id is not null
            and can_replace_recording.patient_id = (select auth.uid())
            and exists (select 1 from public.users u
                        where u.id = (select auth.uid()) and u.role = 'patient'))
        or emgd_private.is_admin()
$$;

-- A new recording may be added to a patient's folder by whoever may replace one there, and by a
-- therapist actively assigned to the patient.
create function emgd_private.can_add_recording(patient_id uuid) returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select emgd_private.can_replace_recording(can_add_recording.patient_id)
        or (can_add_recording.patient_id is not null
            and emgd_private.is_therapist_of(can_add_recording.patient_id))
$$;

revoke all on all functions in schema emgd_private from public, anon;
grant execute on all functions in schema emgd_private to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- storage writes
-- ---------------------------------------------------------------------------------------------

-- Storage uploads with INSERT (a second upload of the same name is a 409 Duplicate) or, with
-- upsert, INSERT ... ON CONFLICT DO UPDATE, which passes the UPDATE policy only when the name
-- exists. A move is an UPDATE of name: both the old and the new name must be replaceable.
drop policy emgd_c3d_insert on storage.objects;
drop policy emgd_c3d_update on storage.objects;
create policy emgd_c3d_insert on storage.objects
    for insert to authenticated
    with check (bucket_id = 'c3d-examples'
                and emgd_private.can_add_recording(public.object_patient_id(name)));
create policy emgd_c3d_update on storage.objects
    for update to authenticated
    using (bucket_id = 'c3d-examples'
           and emgd_private.can_replace_recording(public.object_patient_id(name)))
    with check (bucket_id = 'c3d-examples'
                and emgd_private.can_replace_recording(public.object_patient_id(name)));
-- emgd_c3d_select (patient, active therapist, admin) and emgd_c3d_delete (admin) stay.

-- ---------------------------------------------------------------------------------------------
-- errors that reveal nothing to non-admins
-- ---------------------------------------------------------------------------------------------

-- A BEFORE trigger runs ahead of the RLS check, so this definer used to answer a patient's
-- forged assignment with the role of the user they named ("... not admin") or "a missing user".
-- Callers through the API who are not admins now get exactly RLS's refusal first. The `role`
-- setting is the API role PostgREST (and Storage) switched to; SECURITY DEFINER changes
-- current_user, not it.
create or replace function emgd.validate_therapist_patient() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    therapist_role text;
    patient_role text;
begin
    if current_setting('role', true) in ('anon', 'authenticated')
        and not emgd_private.is_admin() then
        raise exception 'new row violates row-level security policy for table "therapist_patients"'
            using errcode = 'insufficient_privilege';
    end if;
    if new.therapist_id = new.patient_id then
        perform emgd.reject('therapist_patients', 'a user cannot be their own therapist');
    end if;
    select u.role into therapist_role from public.users u where u.id = new.therapist_id;
    if therapist_role is distinct from 'therapist' then
        perform emgd.reject('therapist_patients', format(
            'therapist_id %s must be a user with role therapist, not %s',
            new.therapist_id, coalesce(therapist_role, 'a missing user')));
    end if;
    select u.role into patient_role from public.users u where u.id = new.patient_id;
    if patient_role is distinct from 'patient' then
        perform emgd.reject('therapist_patients', format(
            'patient_id %s must be a user with role patient, not %s',
            new.patient_id, coalesce(patient_role, 'a missing user')));
    end if;
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- sequences: nothing the API roles need
-- ---------------------------------------------------------------------------------------------

-- Supabase's default privileges give anon and authenticated ALL on every new sequence in
-- public: one anonymous setval() could push an identity to its maximum and stop every insert.
-- Rows are inserted by service_role and the owner only, which keep theirs.
revoke all on all sequences in schema public from anon, authenticated;
alter default privileges in schema public revoke all on sequences from anon, authenticated;

-- ---------------------------------------------------------------------------------------------
-- the bucket refuses what cannot be a recording
-- ---------------------------------------------------------------------------------------------

-- 100 MiB: a 10-minute 2 kHz GHOSTLY session is a few tens of MB (EMGD_MAX_FILE_MB, the
-- daemon's own bound, is larger). Browsers send .c3d files as application/octet-stream.
update storage.buckets
set file_size_limit = 100 * 1024 * 1024,
    allowed_mime_types = array['application/octet-stream', 'application/x-c3d',
                               'application/c3d']
where id = 'c3d-examples';
