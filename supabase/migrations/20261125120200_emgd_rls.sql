-- Who may see and change what: RLS on every public table, storage policies for the C3D bucket,
-- grants as Supabase expects, and the realtime publication for live progress.
--
-- Patients read their own profile, assignments, sessions, parameters and contractions;
-- therapists read those of their *active* assigned patients; admins read everything, manage
-- users and assignments and may delete sessions. Nobody but service_role (the daemon, which
-- bypasses RLS) writes sessions or results; sessions are created by the storage trigger.

-- ---------------------------------------------------------------------------------------------
-- helpers: SECURITY DEFINER so policies can consult users/therapist_patients without those
-- tables' own policies applying again (which would recurse)
-- ---------------------------------------------------------------------------------------------

create function public.current_user_role() returns text
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select u.role from public.users u where u.id = (select auth.uid())
$$;

create function public.is_admin() returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select exists (
        select 1 from public.users u where u.id = (select auth.uid()) and u.role = 'admin')
$$;

create function public.is_therapist_of(patient_id uuid) returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select exists (
        select 1
        from public.therapist_patients tp
        join public.users t on t.id = tp.therapist_id and t.role = 'therapist'
        where tp.therapist_id = (select auth.uid())
          and tp.patient_id = is_therapist_of.patient_id
          and tp.active)
$$;

-- May the current user see this patient's data? (self, active therapist, admin)
create function public.can_read_patient(patient_id uuid) returns boolean
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select can_read_patient.patient_id is not null
           and (can_read_patient.patient_id = (select auth.uid())
                or public.is_therapist_of(can_read_patient.patient_id))
        or public.is_admin()
$$;

revoke all on function public.current_user_role(), public.is_admin(), public.is_therapist_of(uuid),
    public.can_read_patient(uuid), public.object_patient_id(text) from public, anon;
grant execute on function public.current_user_role(), public.is_admin(),
    public.is_therapist_of(uuid), public.can_read_patient(uuid), public.object_patient_id(text)
    to authenticated, service_role;

-- ---------------------------------------------------------------------------------------------
-- grants: the app signs in, so anon gets nothing; authenticated gets what RLS then narrows
-- ---------------------------------------------------------------------------------------------

revoke all on public.users, public.therapist_patients, public.sessions,
    public.session_parameters, public.contractions from anon, authenticated;
grant select, insert, update, delete on public.users, public.therapist_patients
    to authenticated;
grant select, delete on public.sessions to authenticated;
grant select on public.session_parameters, public.contractions to authenticated;
grant all on public.users, public.therapist_patients, public.sessions,
    public.session_parameters, public.contractions to service_role;

-- The queue is private: only the daemon (service_role, or the owner) may touch it.
revoke all on all tables in schema emgd from public, anon, authenticated;
revoke all on all functions in schema emgd from public, anon, authenticated;
grant usage on schema emgd to service_role;
grant all on all tables in schema emgd to service_role;
grant execute on all functions in schema emgd to service_role;

-- ---------------------------------------------------------------------------------------------
-- row level security
-- ---------------------------------------------------------------------------------------------

alter table public.users enable row level security;
alter table public.therapist_patients enable row level security;
alter table public.sessions enable row level security;
alter table public.session_parameters enable row level security;
alter table public.contractions enable row level security;

-- users
create policy users_select_self on public.users
    for select to authenticated using (id = (select auth.uid()));
create policy users_select_therapist on public.users
    for select to authenticated using (public.is_therapist_of(id));
create policy users_select_admin on public.users
    for select to authenticated using (public.is_admin());
create policy users_insert_admin on public.users
    for insert to authenticated with check (public.is_admin());
create policy users_update_admin on public.users
    for update to authenticated using (public.is_admin()) with check (public.is_admin());
create policy users_delete_admin on public.users
    for delete to authenticated using (public.is_admin());

-- therapist_patients
create policy therapist_patients_select_therapist on public.therapist_patients
    for select to authenticated using (therapist_id = (select auth.uid()));
create policy therapist_patients_select_patient on public.therapist_patients
    for select to authenticated using (patient_id = (select auth.uid()));
create policy therapist_patients_select_admin on public.therapist_patients
    for select to authenticated using (public.is_admin());
create policy therapist_patients_insert_admin on public.therapist_patients
    for insert to authenticated with check (public.is_admin());
create policy therapist_patients_update_admin on public.therapist_patients
    for update to authenticated using (public.is_admin()) with check (public.is_admin());
create policy therapist_patients_delete_admin on public.therapist_patients
    for delete to authenticated using (public.is_admin());

-- sessions
create policy sessions_select_patient on public.sessions
    for select to authenticated using (patient_id = (select auth.uid()));
create policy sessions_select_therapist on public.sessions
    for select to authenticated using (public.is_therapist_of(patient_id));
create policy sessions_select_admin on public.sessions
    for select to authenticated using (public.is_admin());
create policy sessions_delete_admin on public.sessions
    for delete to authenticated using (public.is_admin());

-- session_parameters
create policy session_parameters_select_patient on public.session_parameters
    for select to authenticated using (exists (
        select 1 from public.sessions s
        where s.id = session_id and s.patient_id = (select auth.uid())));
create policy session_parameters_select_therapist on public.session_parameters
    for select to authenticated using (exists (
        select 1 from public.sessions s
        where s.id = session_id and public.is_therapist_of(s.patient_id)));
create policy session_parameters_select_admin on public.session_parameters
    for select to authenticated using (public.is_admin());

-- contractions
create policy contractions_select_patient on public.contractions
    for select to authenticated using (exists (
        select 1 from public.sessions s
        where s.id = session_id and s.patient_id = (select auth.uid())));
create policy contractions_select_therapist on public.contractions
    for select to authenticated using (exists (
        select 1 from public.sessions s
        where s.id = session_id and public.is_therapist_of(s.patient_id)));
create policy contractions_select_admin on public.contractions
    for select to authenticated using (public.is_admin());

-- ---------------------------------------------------------------------------------------------
-- storage: objects in c3d-examples live under '<patient user id>/<file>'
-- ---------------------------------------------------------------------------------------------

create policy emgd_c3d_select on storage.objects
    for select to authenticated
    using (bucket_id = 'c3d-examples' and public.can_read_patient(public.object_patient_id(name)));
create policy emgd_c3d_insert on storage.objects
    for insert to authenticated
    with check (bucket_id = 'c3d-examples'
                and public.can_read_patient(public.object_patient_id(name)));
create policy emgd_c3d_update on storage.objects
    for update to authenticated
    using (bucket_id = 'c3d-examples' and public.can_read_patient(public.object_patient_id(name)))
    with check (bucket_id = 'c3d-examples'
                and public.can_read_patient(public.object_patient_id(name)));
create policy emgd_c3d_delete on storage.objects
    for delete to authenticated
    using (bucket_id = 'c3d-examples' and public.is_admin());

-- The bucket itself (private: downloads need a session or the service key).
insert into storage.buckets (id, name, public)
values ('c3d-examples', 'c3d-examples', false)
on conflict (id) do nothing;

-- ---------------------------------------------------------------------------------------------
-- realtime: the app follows status/stage/progress live where Supabase Realtime exists
-- ---------------------------------------------------------------------------------------------

do $$
begin
    if exists (select 1 from pg_catalog.pg_publication where pubname = 'supabase_realtime')
        and not exists (
            select 1 from pg_catalog.pg_publication_tables
            where pubname = 'supabase_realtime' and schemaname = 'public'
              and tablename = 'sessions') then
        alter publication supabase_realtime add table public.sessions;
    end if;
end
$$;
