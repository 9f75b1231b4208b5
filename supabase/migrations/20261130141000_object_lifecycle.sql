-- Deletes and moves keep results honest (docs/jobs.md, "Deletes and moves"):
-- * an object deleted through Storage takes its session, results and job with it, in the same
--   transaction as the delete;
-- * an object moved (Storage does a move as an UPDATE of name, version and maybe bucket_id on the
--   same row) takes its old session with it, and the new name gets a session of its own;
-- * a session a person deleted (an admin, through the API) stays deleted: the trigger and
--   catch-up skip that object version, and only a new version brings the session back.

-- The object versions whose session a person deleted while the object stayed.
create table emgd.dismissed_objects (
    bucket_id text not null,
    object_name text not null,
    object_version text,
    dismissed_at timestamptz not null default now(),
    primary key (bucket_id, object_name)
);
comment on table emgd.dismissed_objects is
    'Object versions whose session a person deleted: not queued again until a new version';
revoke all on emgd.dismissed_objects from public, anon, authenticated;
grant all on emgd.dismissed_objects to service_role;

-- A session deleted while its object version still exists was deleted by a person (the object
-- triggers below delete sessions only after the object is gone or renamed, so they never land
-- here). SECURITY DEFINER: the admin deleting through the API has no rights on emgd.
create function emgd.on_session_deleted() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    if exists (
        select 1 from storage.objects o
        where o.bucket_id = old.bucket_id and o.name = old.object_name
          and o.version is not distinct from old.object_version) then
        insert into emgd.dismissed_objects as d (bucket_id, object_name, object_version)
        values (old.bucket_id, old.object_name, old.object_version)
        on conflict (bucket_id, object_name) do update set
            object_version = excluded.object_version,
            dismissed_at = now();
    end if;
    return null;
end
$$;

create trigger sessions_dismissed after delete on public.sessions
    for each row execute function emgd.on_session_deleted();

-- The object is gone (deleted, or renamed away): its session and everything hanging off it
-- (parameters, contractions, the job; a running job's lease then finds nothing and writes
-- nothing) goes too, and so does a dismissal of the old name.
create function emgd.forget_object(p_bucket_id text, p_object_name text) returns void
    language sql
    security definer
    set search_path = ''
as $$
    delete from public.sessions s
    where s.bucket_id = p_bucket_id and s.object_name = p_object_name;
    delete from emgd.dismissed_objects d
    where d.bucket_id = p_bucket_id and d.object_name = p_object_name;
$$;

create function emgd.on_storage_object_gone() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    perform emgd.forget_object(old.bucket_id, old.name);
    if tg_op = 'UPDATE' and emgd.is_c3d(new.bucket_id, new.name) then
        -- the new name is a new session (the version trigger usually queues it too; enqueueing
        -- is idempotent)
        perform emgd.enqueue_object(new.bucket_id, new.name, new.id, new.version,
            nullif(new.metadata ->> 'size', '')::bigint);
    end if;
    return null;
end
$$;

create trigger emgd_on_object_deleted after delete on storage.objects
    for each row execute function emgd.on_storage_object_gone();
create trigger emgd_on_object_moved after update of name, bucket_id on storage.objects
    for each row
    when (new.name is distinct from old.name or new.bucket_id is distinct from old.bucket_id)
    execute function emgd.on_storage_object_gone();

-- enqueue_object as before, but a dismissed version is left alone, and a new version of a
-- dismissed object lifts the dismissal.
create or replace function emgd.enqueue_object(
    p_bucket_id text, p_object_name text, p_object_id uuid, p_version text, p_size bigint
) returns bigint
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    v_patient uuid := public.object_patient_id(p_object_name);
    v_session uuid;
    v_job bigint;
    v_dismissed text;
begin
    select d.object_version into v_dismissed from emgd.dismissed_objects d
    where d.bucket_id = p_bucket_id and d.object_name = p_object_name;
    if found then
        if v_dismissed is not distinct from p_version then
            return null;
        end if;
        delete from emgd.dismissed_objects d
        where d.bucket_id = p_bucket_id and d.object_name = p_object_name;
    end if;

    if not exists (select 1 from public.users u where u.id = v_patient) then
        v_patient := null;
    end if;

    insert into public.sessions as s (bucket_id, object_name, object_id, object_version,
                                      patient_id, file_size)
    values (p_bucket_id, p_object_name, p_object_id, p_version, v_patient, p_size)
    on conflict (bucket_id, object_name) do update set
        object_id = excluded.object_id,
        object_version = excluded.object_version,
        patient_id = excluded.patient_id,
        file_size = excluded.file_size,
        content_sha256 = null,
        error = null
    where s.object_version is distinct from excluded.object_version
       or s.object_id is distinct from excluded.object_id
    returning s.id into v_session;

    if v_session is null then
        -- same version as before: only make sure its job exists (it always should)
        select s.id into v_session from public.sessions s
        where s.bucket_id = p_bucket_id and s.object_name = p_object_name;
        insert into emgd.jobs (session_id, object_version)
        values (v_session, p_version)
        on conflict (session_id) do nothing
        returning id into v_job;
        return v_job;
    end if;

    insert into emgd.jobs as j (session_id, object_version)
    values (v_session, p_version)
    on conflict (session_id) do update set
        state = 'pending',
        attempts = 0,
        crashes = 0,
        run_after = now(),
        last_error = null,
        object_version = excluded.object_version
    returning j.id into v_job;
    return v_job;
end
$$;

-- catch_up as before, without looking at dismissed versions again on every (re)connect.
create or replace function emgd.catch_up() returns int
    language sql
    security definer
    set search_path = ''
as $$
    select count(emgd.enqueue_object(o.bucket_id, o.name, o.id, o.version,
                                     nullif(o.metadata ->> 'size', '')::bigint))::int
    from storage.objects o
    left join public.sessions s on s.bucket_id = o.bucket_id and s.object_name = o.name
    left join emgd.jobs j on j.session_id = s.id
    where emgd.is_c3d(o.bucket_id, o.name)
      and (s.id is null or j.id is null
           or s.object_version is distinct from o.version
           or s.object_id is distinct from o.id)
      and not exists (
          select 1 from emgd.dismissed_objects d
          where d.bucket_id = o.bucket_id and d.object_name = o.name
            and d.object_version is not distinct from o.version);
$$;

revoke all on function emgd.on_session_deleted(), emgd.forget_object(text, text),
    emgd.on_storage_object_gone(), emgd.enqueue_object(text, text, uuid, text, bigint),
    emgd.catch_up() from public, anon, authenticated;
grant execute on function emgd.forget_object(text, text), emgd.catch_up(),
    emgd.enqueue_object(text, text, uuid, text, bigint) to service_role;
