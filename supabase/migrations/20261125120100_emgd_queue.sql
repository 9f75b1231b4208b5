-- The job queue (schema emgd, never exposed through the API) and the path from a storage upload
-- to a pending job: storage.objects trigger -> session + job -> pg_notify('emgd_jobs').
-- The state machine is documented in docs/jobs.md; emgd.jobs_guard enforces it.

create table emgd.config (
    id boolean primary key default true check (id),
    bucket text not null default 'c3d-examples',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
comment on table emgd.config is 'Single-row settings read by the storage trigger';
insert into emgd.config default values;

create trigger config_updated_at before update on emgd.config
    for each row execute function emgd.set_updated_at();

create table emgd.jobs (
    id bigint generated always as identity primary key,
    session_id uuid not null unique references public.sessions (id) on delete cascade,
    state text not null default 'pending',
    attempts int not null default 0,
    max_attempts int not null default 5,
    crashes int not null default 0,
    run_after timestamptz not null default now(),
    lease_owner uuid,
    lease_token uuid,
    lease_expires_at timestamptz,
    last_error text,
    object_version text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);
-- What the claim query scans: due pending jobs, oldest first; and expired leases to rescue.
create index jobs_pending_idx on emgd.jobs (run_after, id) where state = 'pending';
create index jobs_running_lease_idx on emgd.jobs (lease_expires_at) where state = 'running';
comment on table emgd.jobs is
    'One analysis job per session: pending -> running -> succeeded|failed|quarantined (docs/jobs.md)';

-- Values, the legal transitions, and the bookkeeping every transition implies (timestamps,
-- leases only while running). Same-state updates (heartbeats, progress) pass untouched.
create function emgd.jobs_guard() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    if new.state not in ('pending', 'running', 'succeeded', 'failed', 'quarantined') then
        perform emgd.reject('jobs', format(
            'state must be one of pending, running, succeeded, failed, quarantined; got %L',
            new.state));
    end if;
    if new.attempts < 0 or new.crashes < 0 or new.max_attempts < 1 then
        perform emgd.reject('jobs', format(
            'attempts (%s) and crashes (%s) must be >= 0 and max_attempts (%s) >= 1',
            new.attempts, new.crashes, new.max_attempts));
    end if;

    if tg_op = 'INSERT' then
        if new.state not in ('pending') then
            raise exception 'illegal job transition: a new job must start as pending, not %',
                new.state using errcode = 'check_violation';
        end if;
    elsif new.state is distinct from old.state then
        if not (
            (old.state = 'pending' and new.state = 'running')
            or (old.state = 'running' and new.state in ('succeeded', 'failed', 'quarantined', 'pending'))
            or (old.state in ('succeeded', 'failed', 'quarantined') and new.state = 'pending')
        ) then
            raise exception 'illegal job transition: % -> % (job %)', old.state, new.state, old.id
                using errcode = 'check_violation',
                      hint = 'legal: pending->running; running->succeeded|failed|quarantined|pending; '
                             'succeeded|failed|quarantined->pending';
        end if;
        if new.state = 'running' then
            new.started_at := now();
            new.finished_at := null;
        elsif new.state in ('succeeded', 'failed', 'quarantined') then
            new.finished_at := now();
        else
            new.finished_at := null;
        end if;
    end if;

    -- A lease means "a daemon is working on this": it exists only while running.
    if new.state <> 'running' then
        new.lease_owner := null;
        new.lease_token := null;
        new.lease_expires_at := null;
    end if;
    return new;
end
$$;

create trigger jobs_guard before insert or update on emgd.jobs
    for each row execute function emgd.jobs_guard();
create trigger jobs_updated_at before update on emgd.jobs
    for each row execute function emgd.set_updated_at();

-- Keeps the user-visible session status in step with the job and wakes daemons. NOTIFY is
-- delivered at commit, so a listener never hears of a job whose transaction rolled back (e.g.
-- Supabase Storage's permission-test insert).
create function emgd.jobs_sync() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    if tg_op = 'UPDATE' and new.state is not distinct from old.state
        and new.last_error is not distinct from old.last_error
        and new.object_version is not distinct from old.object_version then
        return null;
    end if;

    if tg_op = 'INSERT' or new.state is distinct from old.state
        or new.last_error is distinct from old.last_error then
        update public.sessions s set
            status = case new.state
                when 'pending' then 'pending'
                when 'running' then 'processing'
                when 'succeeded' then 'completed'
                else 'failed' end,
            stage = case new.state
                when 'pending' then 'queued'
                when 'running' then 'downloading'
                when 'succeeded' then 'done'
                else 'failed' end,
            progress = case new.state when 'succeeded' then 1 else 0 end,
            error = case when new.state in ('failed', 'quarantined') then new.last_error end
        where s.id = new.session_id;
    end if;

    -- Wake daemons whenever there is (new) work: a job became pending, or a pending job now
    -- points at a newer object version.
    if new.state = 'pending' and (
        tg_op = 'INSERT' or old.state <> 'pending'
        or new.object_version is distinct from old.object_version) then
        perform pg_notify('emgd_jobs',
            json_build_object('job_id', new.id, 'session_id', new.session_id)::text);
    end if;
    return null;
end
$$;

create trigger jobs_sync after insert or update on emgd.jobs
    for each row execute function emgd.jobs_sync();

-- ---------------------------------------------------------------------------------------------
-- from a storage object to a session and a pending job
-- ---------------------------------------------------------------------------------------------

-- The patient folder of an object name ('<user uuid>/<file>.c3d'), or NULL when the first
-- segment is not a uuid; never raises, so it is safe inside RLS policies.
create function public.object_patient_id(object_name text) returns uuid
    language sql
    immutable
    set search_path = ''
as $$
    select case
        when split_part(object_name, '/', 1)
             ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            and position('/' in object_name) > 0
        then split_part(object_name, '/', 1)::uuid
    end
$$;

create function emgd.is_c3d(bucket_id text, object_name text) returns boolean
    language sql
    stable
    set search_path = ''
as $$
    select bucket_id = (select c.bucket from emgd.config c)
        and lower(object_name) like '%.c3d'
$$;

-- Creates or resets the session and job of one object version. Idempotent: the same version
-- delivered again (a replayed upsert, catch-up after the trigger already ran) changes nothing.
-- Returns the job id when something was (re)queued, else NULL.
create function emgd.enqueue_object(
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
begin
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

create function emgd.on_storage_object() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    if emgd.is_c3d(new.bucket_id, new.name) then
        perform emgd.enqueue_object(new.bucket_id, new.name, new.id, new.version,
            nullif(new.metadata ->> 'size', '')::bigint);
    end if;
    return null;
end
$$;

-- Supabase Storage first INSERTs as the uploading user inside a transaction it rolls back (a
-- permission test), then upserts as service_role; an overwrite is an UPDATE of version.
create trigger emgd_on_object_insert after insert on storage.objects
    for each row execute function emgd.on_storage_object();
create trigger emgd_on_object_new_version after update of version on storage.objects
    for each row when (new.version is distinct from old.version)
    execute function emgd.on_storage_object();

-- ---------------------------------------------------------------------------------------------
-- requeue by SQL (each notifies through jobs_sync)
-- ---------------------------------------------------------------------------------------------

create function emgd.requeue_jobs(p_ids bigint[]) returns int
    language plpgsql
    set search_path = ''
as $$
declare
    n int;
begin
    update emgd.jobs set
        state = 'pending',
        attempts = 0,
        crashes = 0,
        run_after = now(),
        last_error = null
    where id = any (p_ids)
      and state in ('succeeded', 'failed', 'quarantined');
    get diagnostics n = row_count;
    return n;
end
$$;

-- Requeue one session's finished job (succeeded, failed or quarantined). A pending or running
-- job is left alone: it is about to run or running. Returns 1 or 0.
create function emgd.requeue(session_id uuid) returns int
    language sql
    set search_path = ''
as $$
    select emgd.requeue_jobs(array(
        select j.id from emgd.jobs j where j.session_id = requeue.session_id));
$$;

-- Requeue failed and quarantined jobs, all of them or those that finished within `since`.
create function emgd.requeue_failed(since interval default null) returns int
    language sql
    set search_path = ''
as $$
    select emgd.requeue_jobs(array(
        select j.id from emgd.jobs j
        where j.state in ('failed', 'quarantined')
          and (requeue_failed.since is null
               or coalesce(j.finished_at, j.updated_at) >= now() - requeue_failed.since)));
$$;

-- Analyse everything again (e.g. after a new analysis version): every finished job.
create function emgd.reprocess_all() returns int
    language sql
    set search_path = ''
as $$
    select emgd.requeue_jobs(array(
        select j.id from emgd.jobs j where j.state in ('succeeded', 'failed', 'quarantined')));
$$;

-- Sessions and jobs for C3D objects the trigger never saw (uploaded before the migration, or
-- while it was disabled) and for versions it missed. Returns how many jobs were (re)queued.
create function emgd.catch_up() returns int
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
           or s.object_id is distinct from o.id);
$$;
