-- One home for each queue fact that was written in several places:
--
-- * the C3D bucket: emgd.config.bucket, read by the storage trigger AND by the storage policies
--   (they named 'c3d-examples' themselves, so changing the config silently left uploads to the
--   new bucket unguarded by our rules and the old one still open);
-- * the attempt limit: emgd.config.max_attempts, applied by the same SQL whether a daemon gives
--   up on a retry or the rescue finds an expired lease (the daemon had its own setting and used
--   the smaller of the two, the rescue only the table's default);
-- * the job states: emgd.job_states(), which the guard and queue_depth read;
-- * the lease and finished_at bookkeeping: emgd.jobs_guard does it on every transition, so the
--   functions below no longer repeat it. (emgd.complete_job still sets them as well, harmlessly:
--   it is redefined wherever the result columns change, and its next redefinition drops them.)

-- ---------------------------------------------------------------------------------------------
-- the bucket
-- ---------------------------------------------------------------------------------------------

-- The bucket whose .c3d objects are sessions. Policies run as the uploading user, who cannot read
-- emgd.config: SECURITY DEFINER, in the schema the API never exposes (emgd_private).
create function emgd_private.c3d_bucket() returns text
    language sql
    stable
    security definer
    set search_path = ''
as $$
    select c.bucket from emgd.config c
$$;
revoke all on function emgd_private.c3d_bucket() from public, anon;
grant execute on function emgd_private.c3d_bucket() to authenticated, service_role;

create or replace function emgd.is_c3d(bucket_id text, object_name text) returns boolean
    language sql
    stable
    set search_path = ''
as $$
    select is_c3d.bucket_id = emgd_private.c3d_bucket()
        and lower(is_c3d.object_name) like '%.c3d'
$$;

-- The same predicates as before, with the bucket read from the config. `(select ...)` makes it
-- one evaluation per statement (an InitPlan), not one per row.
alter policy emgd_c3d_select on storage.objects
    using (bucket_id = (select emgd_private.c3d_bucket())
           and emgd_private.can_read_patient(public.object_patient_id(name)));
alter policy emgd_c3d_insert on storage.objects
    with check (bucket_id = (select emgd_private.c3d_bucket())
                and emgd_private.can_add_recording(public.object_patient_id(name)));
alter policy emgd_c3d_update on storage.objects
    using (bucket_id = (select emgd_private.c3d_bucket())
           and emgd_private.can_replace_recording(public.object_patient_id(name)))
    with check (bucket_id = (select emgd_private.c3d_bucket())
                and emgd_private.can_replace_recording(public.object_patient_id(name)));
alter policy emgd_c3d_delete on storage.objects
    using (bucket_id = (select emgd_private.c3d_bucket()) and emgd_private.is_admin());

-- ---------------------------------------------------------------------------------------------
-- the job states
-- ---------------------------------------------------------------------------------------------

-- Every state a job can be in, in the order the queue is shown (docs/jobs.md draws them).
create function emgd.job_states() returns text[]
    language sql
    immutable
    parallel safe
    set search_path = ''
as $$
    select array['pending', 'running', 'succeeded', 'failed', 'quarantined']
$$;

create or replace function emgd.queue_depth()
returns table (state text, jobs bigint, oldest timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
    select s.state, count(j.id), min(j.created_at)
    from unnest(emgd.job_states()) with ordinality as s(state, n)
    left join emgd.jobs j on j.state = s.state
    group by s.state, s.n
    order by s.n;
$$;

-- ---------------------------------------------------------------------------------------------
-- the attempt limit
-- ---------------------------------------------------------------------------------------------

alter table emgd.config
    add column max_attempts int not null default 5 check (max_attempts >= 1);
comment on column emgd.config.max_attempts is
    'Attempts a job gets before a transient failure or an expired lease fails it for good';

-- True once a job that has been claimed p_attempts times may not run again.
create function emgd.attempts_exhausted(p_attempts int) returns boolean
    language sql
    stable
    set search_path = ''
as $$
    select p_attempts >= (select c.max_attempts from emgd.config c)
$$;

-- The guard, without the per-job limit (the config holds it) and with the states from
-- emgd.job_states(). Transitions and bookkeeping are unchanged.
create or replace function emgd.jobs_guard() returns trigger
    language plpgsql
    set search_path = ''
as $$
begin
    if not (new.state = any (emgd.job_states())) then
        perform emgd.reject('jobs', format('state must be one of %s; got %L',
            array_to_string(emgd.job_states(), ', '), new.state));
    end if;
    if new.attempts < 0 or new.crashes < 0 then
        perform emgd.reject('jobs', format(
            'attempts (%s) and crashes (%s) must be >= 0', new.attempts, new.crashes));
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

-- claim_jobs keeps its result columns; max_attempts now comes from the config.
create or replace function emgd.claim_jobs(p_owner uuid, p_limit int, p_lease_seconds double precision)
returns table (
    job_id bigint,
    session_id uuid,
    lease_token uuid,
    attempts int,
    max_attempts int,
    crashes int,
    bucket_id text,
    object_name text,
    object_version text,
    patient_id uuid,
    object_size bigint
)
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
    perform set_config('synchronous_commit', 'off', true);
    return query
    with picked as materialized (
        select j.id
        from emgd.jobs j
        where j.state = 'pending' and j.run_after <= now()
        order by j.run_after, j.id
        limit p_limit
        for update skip locked
    ),
    claimed as (
        update emgd.jobs j
        set state = 'running',
            attempts = j.attempts + 1,
            lease_owner = p_owner,
            lease_token = gen_random_uuid(),
            lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
        from picked
        where j.id = picked.id
        returning j.id, j.session_id, j.lease_token, j.attempts, j.crashes
    )
    select c.id, c.session_id, c.lease_token, c.attempts,
           (select cf.max_attempts from emgd.config cf), c.crashes,
           s.bucket_id, s.object_name, s.object_version, s.patient_id,
           (o.metadata ->> 'size')::bigint
    from claimed c
    join public.sessions s on s.id = c.session_id
    left join storage.objects o on o.bucket_id = s.bucket_id and o.name = s.object_name
    order by c.id;
end;
$$;

alter table emgd.jobs drop column max_attempts;

create or replace function emgd.rescue_expired()
returns int
language plpgsql
security definer
set search_path = ''
as $$
declare
    n int;
    check_owners boolean :=
        clock_timestamp() - pg_catalog.pg_postmaster_start_time() > interval '15 seconds';
begin
    with live as (
        select l.objid
        from pg_catalog.pg_locks l
        where check_owners
          and l.locktype = 'advisory' and l.granted and l.objsubid = 2
          and l.classid = 1701667172
          and l.database = (select d.oid from pg_catalog.pg_database d
                            where d.datname = pg_catalog.current_database())
    ),
    expired as (
        select j.id, j.lease_expires_at < clock_timestamp() as lapsed
        from emgd.jobs j
        where j.state = 'running'
          and (j.lease_expires_at < clock_timestamp()
               or (check_owners
                   and exists (select 1 from emgd.lock_owners o where o.owner = j.lease_owner)
                   and not exists (
                       select 1 from live
                       where live.objid = emgd.owner_lock_key(j.lease_owner)::oid)))
        for update of j skip locked
    )
    update emgd.jobs j
    set state = case when emgd.attempts_exhausted(j.attempts) then 'failed' else 'pending' end,
        last_error = case when expired.lapsed
            then 'the daemon processing this file stopped answering (lease expired)'
            else 'the daemon processing this file died' end,
        run_after = now()
    from expired
    where j.id = expired.id;
    get diagnostics n = row_count;
    if check_owners then
        delete from emgd.lock_owners o
        where not exists (select 1 from pg_catalog.pg_locks l
                          where l.locktype = 'advisory' and l.granted and l.objsubid = 2
                            and l.classid = 1701667172
                            and l.objid = emgd.owner_lock_key(o.owner)::oid)
          and not exists (select 1 from emgd.jobs j
                          where j.state = 'running' and j.lease_owner = o.owner);
    end if;
    return n;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- ending a job without results
-- ---------------------------------------------------------------------------------------------

create or replace function emgd.finish_job(
    p_job_id bigint, p_token uuid, p_state text, p_reason text,
    p_retry_in interval default null, p_crashed boolean default false
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
begin
    if p_state not in ('failed', 'quarantined', 'pending') then
        raise exception 'finish_job: % is not a state a job can be finished in', p_state
            using errcode = 'check_violation';
    end if;
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return false;
    end if;
    update emgd.jobs
    set state = p_state,
        last_error = p_reason,
        crashes = crashes + case when p_crashed then 1 else 0 end,
        run_after = now() + coalesce(p_retry_in, interval '0')
    where id = j.id;
    return true;
end;
$$;

-- A transient failure: back to pending after p_retry_in, or failed for good once the job has
-- used its attempts (the same limit the rescue applies). Returns the state the job is now in
-- ('pending' or 'failed'), or 'lease_lost' when the lease is not ours (nothing written).
create function emgd.retry_job(
    p_job_id bigint, p_token uuid, p_reason text, p_retry_in interval,
    p_crashed boolean default false
)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
begin
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return 'lease_lost';
    end if;
    if emgd.attempts_exhausted(j.attempts) then
        perform emgd.finish_job(p_job_id, p_token, 'failed',
            format('%s (gave up after %s attempts)', p_reason, j.attempts), null, p_crashed);
        return 'failed';
    end if;
    perform emgd.finish_job(p_job_id, p_token, 'pending', p_reason, p_retry_in, p_crashed);
    return 'pending';
end;
$$;

create or replace function emgd.release_job(p_job_id bigint, p_token uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
begin
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return false;
    end if;
    update emgd.jobs
    set state = 'pending', attempts = greatest(attempts - 1, 0), run_after = now()
    where id = j.id;
    return true;
end;
$$;

revoke all on function emgd.job_states() from public;
revoke all on function emgd.attempts_exhausted(int) from public;
revoke all on function emgd.retry_job(bigint, uuid, text, interval, boolean) from public;
grant execute on function emgd.job_states() to service_role;
grant execute on function emgd.attempts_exhausted(int) to service_role;
grant execute on function emgd.retry_job(bigint, uuid, text, interval, boolean) to service_role;
