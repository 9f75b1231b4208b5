-- The daemon's side of the queue: claim, lease, stage, commit, fail, release, rescue.
--
-- Every step that changes a job is one SQL function that checks the lease token first, so a daemon
-- that lost its lease (killed, paused, partitioned) can never write anything: the check and the write
-- happen in the same transaction, under the job's row lock.

-- Progress-only transactions (claim, heartbeat, set_stage, a reuse check that found nothing) commit
-- with synchronous_commit off for their own transaction: they are visible at once but do not wait
-- for the WAL flush (~4 ms per commit on a small disk: the queue's bottleneck otherwise). A
-- PostgreSQL crash can lose at most the last fraction of a second of them, and each such loss is a
-- case the lease already handles: a lost claim leaves the job pending (the worker's lease checks
-- then fail, so it writes nothing, and another claim runs it); a lost stage or heartbeat only shows
-- older progress or lets the lease expire sooner. Results (complete_job), failures and releases keep
-- the synchronous commit, and flushing them makes every earlier progress commit durable too.
-- The functions the daemon calls per job are plpgsql so their plans are cached per connection
-- (SQL-language functions with a SET clause are planned again on every call).

-- Claim up to p_limit runnable jobs for p_owner (a UUID per daemon process start).
-- The MATERIALIZED CTE makes PostgreSQL lock exactly the rows it picked (SKIP LOCKED), instead of
-- re-evaluating the subquery per joined row.
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
            lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
            started_at = now(),
            finished_at = null
        from picked
        where j.id = picked.id
        returning j.id, j.session_id, j.lease_token, j.attempts, j.max_attempts, j.crashes
    )
    select c.id, c.session_id, c.lease_token, c.attempts, c.max_attempts, c.crashes,
           s.bucket_id, s.object_name, s.object_version, s.patient_id,
           (o.metadata ->> 'size')::bigint
    from claimed c
    join public.sessions s on s.id = c.session_id
    left join storage.objects o on o.bucket_id = s.bucket_id and o.name = s.object_name
    order by c.id;
end;
$$;

-- Extend the leases of the jobs this daemon still works on; returns the ids whose lease it still holds
-- (a job missing from the answer was lost: its worker must not commit, and the lease check ensures it).
create or replace function emgd.heartbeat(p_owner uuid, p_job_ids bigint[], p_lease_seconds double precision)
returns setof bigint
language sql
security definer
set search_path = ''
as $$
    select set_config('synchronous_commit', 'off', true);
    update emgd.jobs
    set lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
    where id = any (p_job_ids) and lease_owner = p_owner and state = 'running'
    returning id;
$$;

-- Put running jobs whose lease expired back to pending (their daemon died or stalled).
-- An expired job that already used all its attempts fails instead of looping forever.
create or replace function emgd.rescue_expired()
returns int
language plpgsql
security definer
set search_path = ''
as $$
declare
    n int;
begin
    with expired as (
        select id from emgd.jobs
        where state = 'running' and lease_expires_at < clock_timestamp()
        for update skip locked
    )
    update emgd.jobs j
    set state = case when j.attempts >= j.max_attempts then 'failed' else 'pending' end,
        last_error = 'the daemon processing this file stopped answering (lease expired)',
        lease_owner = null, lease_token = null, lease_expires_at = null,
        run_after = now(),
        finished_at = case when j.attempts >= j.max_attempts then now() end
    from expired
    where j.id = expired.id;
    get diagnostics n = row_count;
    return n;
end;
$$;

-- Lock the job if and only if p_token still holds a live lease on it.
create or replace function emgd.lock_leased_job(p_job_id bigint, p_token uuid)
returns emgd.jobs
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
begin
    select * into j from emgd.jobs
    where id = p_job_id and lease_token = p_token and state = 'running'
      and lease_expires_at > clock_timestamp()
    for update;
    return j;
end;
$$;

-- Record the stage the app shows live (downloading, analysing, saving); false when the lease is lost.
create or replace function emgd.set_stage(p_job_id bigint, p_token uuid, p_stage text, p_progress real default null)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
begin
    perform set_config('synchronous_commit', 'off', true);
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return false;
    end if;
    update public.sessions
    set stage = p_stage, progress = coalesce(p_progress, progress)
    where id = j.session_id;
    return true;
end;
$$;

-- Replace a session's results with p_result (emg_core's SessionResult.to_dict()) and complete the job,
-- all in the caller's one transaction. Returns false, writing nothing, when the lease is not ours.
-- Validation triggers on the result tables raise on bad values, which rolls the whole call back.
create or replace function emgd.complete_job(
    p_job_id bigint, p_token uuid, p_result jsonb, p_sha256 text, p_size bigint
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
    meta jsonb := coalesce(p_result -> 'metadata', '{}'::jsonb);
begin
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return false;
    end if;

    delete from public.contractions where session_id = j.session_id;
    delete from public.session_parameters where session_id = j.session_id;

    update public.sessions s
    set content_sha256 = p_sha256,
        file_size = p_size,
        recorded_at = (p_result ->> 'recorded_at')::timestamptz,
        duration_s = (p_result ->> 'duration_s')::double precision,
        game_name = meta ->> 'game_name',
        game_level = (meta ->> 'game_level')::int,
        game_duration = (meta ->> 'game_duration')::double precision,
        game_therapist_id = meta ->> 'therapist_id',
        player_name = meta ->> 'player_name',
        game_score = (meta ->> 'game_score')::double precision,
        metadata = meta,
        analysis_version = p_result ->> 'analysis_version',
        processing = p_result -> 'processing',
        overall_compliance = (p_result ->> 'overall_compliance')::double precision,
        symmetry = (p_result ->> 'symmetry')::double precision,
        progress = 1,
        processed_at = now()
    where s.id = j.session_id;

    insert into public.session_parameters (
        session_id, name, sampling_rate, unit, mvc_value, mvc_threshold, mvc_method,
        duration_threshold_ms, expected_contractions, contractions_total, contractions_good,
        contractions_mvc_compliant, contractions_duration_compliant, completion_rate, intensity_rate,
        duration_rate, compliance_rate, time_under_tension_ms, rms, mav, mpf_hz, mdf_hz, fi_nsm5,
        fi_nsm5_relative, mpf_slope_hz_per_s, mdf_slope_hz_per_s, mpf_slope_pct_per_s,
        mdf_slope_pct_per_s, signal_quality, activation_agreement, processing
    )
    select j.session_id, c.name, c.sampling_rate, c.unit, c.mvc_value, c.mvc_threshold, c.mvc_method,
        c.duration_threshold_ms, c.expected_contractions, c.contractions_total, c.contractions_good,
        c.contractions_mvc_compliant, c.contractions_duration_compliant, c.completion_rate,
        c.intensity_rate, c.duration_rate, c.compliance_rate, c.time_under_tension_ms, c.rms, c.mav,
        c.mpf_hz, c.mdf_hz, c.fi_nsm5, c.fi_nsm5_relative, c.mpf_slope_hz_per_s, c.mdf_slope_hz_per_s,
        c.mpf_slope_pct_per_s, c.mdf_slope_pct_per_s, c.signal_quality, c.activation_agreement,
        p_result -> 'processing'
    from jsonb_populate_recordset(null::public.session_parameters, p_result -> 'channels') c;

    insert into public.contractions (
        session_id, channel, contraction_index, start_ms, end_ms, duration_ms, peak_amplitude,
        mean_amplitude, meets_mvc, meets_duration, is_good, mpf_hz, mdf_hz
    )
    select j.session_id, ch ->> 'name', (k ->> 'index')::int, (k ->> 'start_ms')::double precision,
        (k ->> 'end_ms')::double precision, (k ->> 'duration_ms')::double precision,
        (k ->> 'peak_amplitude')::double precision, (k ->> 'mean_amplitude')::double precision,
        (k ->> 'meets_mvc')::boolean, (k ->> 'meets_duration')::boolean, (k ->> 'is_good')::boolean,
        (k ->> 'mpf_hz')::double precision, (k ->> 'mdf_hz')::double precision
    from jsonb_array_elements(p_result -> 'channels') ch
    cross join lateral jsonb_array_elements(coalesce(ch -> 'contractions', '[]'::jsonb)) k;

    update emgd.jobs
    set state = 'succeeded', last_error = null, finished_at = now(),
        lease_owner = null, lease_token = null, lease_expires_at = null
    where id = j.id;
    return true;
end;
$$;

-- A session's stored results as the JSON emg_core's SessionResult.to_dict() would give: the
-- columns carry the result's field names, so to_jsonb of a row is the channel's JSON as it was.
create or replace function emgd.session_result(p_session_id uuid)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select jsonb_build_object(
        'file', s.object_name,
        'analysis_version', s.analysis_version,
        'processing', s.processing,
        'recorded_at', s.recorded_at,
        'duration_s', s.duration_s,
        'metadata', s.metadata,
        'overall_compliance', s.overall_compliance,
        'symmetry', s.symmetry,
        'channels', coalesce((
            select jsonb_agg(
                to_jsonb(p) - 'id' - 'session_id' - 'created_at' - 'updated_at'
                || jsonb_build_object('contractions', coalesce((
                    select jsonb_agg(
                        to_jsonb(c) - 'id' - 'session_id' - 'channel' - 'contraction_index'
                        - 'created_at' - 'updated_at'
                        || jsonb_build_object('index', c.contraction_index)
                        order by c.contraction_index)
                    from public.contractions c
                    where c.session_id = s.id and c.channel = p.name), '[]'::jsonb))
                order by p.id)
            from public.session_parameters p where p.session_id = s.id), '[]'::jsonb))
    from public.sessions s
    where s.id = p_session_id;
$$;

-- Content already analysed with the same analysis version and options is not analysed again:
-- the results of the session that has them (possibly this very session) are committed through
-- complete_job, as if just computed. Returns false when there is nothing to reuse or the lease is
-- not ours. The index makes that lookup one probe instead of a scan of every session, per job.
create index if not exists sessions_content_sha256_idx on public.sessions (content_sha256)
    where content_sha256 is not null;

create or replace function emgd.reuse_results(
    p_job_id bigint, p_token uuid, p_sha256 text, p_size bigint, p_analysis_version text,
    p_processing jsonb
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
    src uuid;
begin
    j := emgd.lock_leased_job(p_job_id, p_token);
    if j.id is null then
        return false;
    end if;
    select s.id into src
    from public.sessions s
    where s.content_sha256 = p_sha256 and s.file_size = p_size
      and s.analysis_version = p_analysis_version
      and s.processed_at is not null
      and (p_processing is null or s.processing -> 'options' is not distinct from p_processing)
      and exists (select 1 from public.session_parameters sp where sp.session_id = s.id)
    order by (s.id = j.session_id) desc, s.processed_at desc
    limit 1;
    if src is null then
        perform set_config('synchronous_commit', 'off', true);  -- only a row lock was taken
        return false;
    end if;
    return emgd.complete_job(p_job_id, p_token, emgd.session_result(src), p_sha256, p_size);
end;
$$;

-- The daemon's one call between download and analysis: reuse identical results when there are any
-- ('reused': the job is complete), else record the next stage ('staged'); 'lease_lost' when the lease
-- is not ours. One round trip and one commit instead of two for every job.
create or replace function emgd.reuse_or_stage(
    p_job_id bigint, p_token uuid, p_sha256 text, p_size bigint, p_analysis_version text,
    p_processing jsonb, p_stage text, p_progress real default null
)
returns text
language plpgsql
security definer
set search_path = ''
as $$
begin
    if emgd.reuse_results(p_job_id, p_token, p_sha256, p_size, p_analysis_version, p_processing) then
        return 'reused';
    end if;
    if emgd.set_stage(p_job_id, p_token, p_stage, p_progress) then
        return 'staged';
    end if;
    return 'lease_lost';
end;
$$;

-- End a claimed job without results: p_state is 'failed', 'quarantined' or 'pending' (retry after
-- p_retry_in). p_crashed counts a worker crash or timeout toward quarantine. False when the lease is lost.
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
        run_after = now() + coalesce(p_retry_in, interval '0'),
        finished_at = case when p_state = 'pending' then null else now() end,
        lease_owner = null, lease_token = null, lease_expires_at = null
    where id = j.id;
    return true;
end;
$$;

-- Give a job back untouched (daemon shutting down): it does not cost the file an attempt.
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
    set state = 'pending', attempts = greatest(attempts - 1, 0), run_after = now(),
        lease_owner = null, lease_token = null, lease_expires_at = null
    where id = j.id;
    return true;
end;
$$;

-- Queue depth by state for status and metrics (one row per state, zero included).
create or replace function emgd.queue_depth()
returns table (state text, jobs bigint, oldest timestamptz)
language sql
stable
security definer
set search_path = ''
as $$
    select s.state, count(j.id), min(j.created_at)
    from unnest(array['pending', 'running', 'succeeded', 'failed', 'quarantined']) as s(state)
    left join emgd.jobs j on j.state = s.state
    group by s.state
    order by array_position(array['pending', 'running', 'succeeded', 'failed', 'quarantined'], s.state);
$$;

revoke all on function emgd.claim_jobs(uuid, int, double precision) from public;
revoke all on function emgd.heartbeat(uuid, bigint[], double precision) from public;
revoke all on function emgd.rescue_expired() from public;
revoke all on function emgd.lock_leased_job(bigint, uuid) from public;
revoke all on function emgd.set_stage(bigint, uuid, text, real) from public;
revoke all on function emgd.complete_job(bigint, uuid, jsonb, text, bigint) from public;
revoke all on function emgd.reuse_results(bigint, uuid, text, bigint, text, jsonb) from public;
revoke all on function emgd.session_result(uuid) from public;
revoke all on function emgd.reuse_or_stage(bigint, uuid, text, bigint, text, jsonb, text, real)
    from public;
revoke all on function emgd.finish_job(bigint, uuid, text, text, interval, boolean) from public;
revoke all on function emgd.release_job(bigint, uuid) from public;
revoke all on function emgd.queue_depth() from public;
grant execute on all functions in schema emgd to service_role;
