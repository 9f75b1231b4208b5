-- The report picture of a session: a PNG the daemon renders after the results are committed and
-- stores in the recording's bucket at '<patient id>/reports/<session id>.png', so the storage
-- policies that guard the patient's recordings (patient, active therapist, admin read) guard it
-- too. sessions.report_path names it once it is there.

-- The bucket takes the pictures as well as the recordings.
update storage.buckets
set allowed_mime_types = array(
        select distinct m from unnest(coalesce(allowed_mime_types, '{}') || '{image/png}') m
        order by m)
where id = 'c3d-examples';

-- Only the daemon (service_role) and admins write into a patient's reports folder: a picture a
-- therapist looks at must be the one the analysis drew. RESTRICTIVE, so it narrows whatever the
-- recording policies allow.
create policy emgd_c3d_reports_insert on storage.objects
    as restrictive for insert to authenticated
    with check (bucket_id <> 'c3d-examples'
                or (storage.foldername(name))[2] is distinct from 'reports'
                or emgd_private.is_admin());
create policy emgd_c3d_reports_update on storage.objects
    as restrictive for update to authenticated
    using (bucket_id <> 'c3d-examples'
           or (storage.foldername(name))[2] is distinct from 'reports'
           or emgd_private.is_admin())
    with check (bucket_id <> 'c3d-examples'
                or (storage.foldername(name))[2] is distinct from 'reports'
                or emgd_private.is_admin());

-- New results make the old picture wrong: committing them (processed_at changes) clears
-- report_path in the same statement, so the app never shows a picture of other numbers. The
-- daemon records the new picture's path afterwards.
create function emgd.clear_stale_report() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    if new.processed_at is distinct from old.processed_at
        and new.report_path is not distinct from old.report_path then
        new.report_path := null;
    end if;
    return new;
end
$$;

create trigger sessions_clear_stale_report before update of processed_at on public.sessions
    for each row execute function emgd.clear_stale_report();

-- The daemon records a picture it stored, only for the results it was drawn from (the session's
-- processed_at unchanged since): a picture finished after newer results is not recorded.
create function emgd.set_report_path(
    p_session_id uuid, p_report_path text, p_processed_at timestamptz)
    returns boolean
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    n int;
begin
    if p_report_path is null or p_report_path !~ '^[^/]+/reports/[^/]+\.png$' then
        perform emgd.reject('sessions', format(
            'report_path must be <patient folder>/reports/<name>.png, got %L', p_report_path));
    end if;
    update public.sessions s
    set report_path = p_report_path
    where s.id = p_session_id and s.status = 'completed'
      and s.processed_at = p_processed_at
      and split_part(s.object_name, '/', 1) = split_part(p_report_path, '/', 1);
    get diagnostics n = row_count;
    return n = 1;
end
$$;

revoke all on function emgd.set_report_path(uuid, text, timestamptz), emgd.clear_stale_report()
    from public, anon, authenticated;
grant execute on function emgd.set_report_path(uuid, text, timestamptz) to service_role;
