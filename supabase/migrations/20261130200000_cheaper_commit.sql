-- Less work inside PostgreSQL per job, with the same results, errors and state machine.
--
-- * The validation triggers on the per-job path (sessions, session_parameters, contractions)
--   make the same checks in the same order, but each emgd.check_* is an inlined SQL expression
--   (emgd.passes_*) assigned instead of a PERFORM: no query per check, and a function is called
--   only to reject. A refused row gets the same message and SQLSTATE from the same first failing
--   check.
-- * emgd.complete_job writes the session's final status, stage, progress and error in the same
--   UPDATE as its results, and emgd.jobs_sync leaves a session alone when it already holds the
--   values it would write: a committed result makes one new version of the session row, not two.
-- * emgd.analysis_options answers the common case (no settings row names a channel for the
--   patient and the patient has no reference session) with one query.
-- * The processing record, stored with every result, is compressed with lz4 instead of pglz.
-- * emgd.set_stage and emgd.reuse_results call set_config as an expression, not a PERFORM (a
--   query of its own).
--
-- CREATE OR REPLACE keeps every existing function's name, signature and privileges; the new
-- emgd.passes_* and emgd.rejected get those of emgd.check_*.

-- ---------------------------------------------------------------------------------------------
-- validation triggers
-- ---------------------------------------------------------------------------------------------

-- A check as an expression: true, or it raises the check's own error. Written in SQL, without a
-- SET clause, so the planner inlines it where it is used: the test is evaluated in place and a
-- function is called only to reject. A PERFORM of emgd.check_* is a query of its own (about
-- 4 us each, 35 of them per channel row); an assignment of these is a simple expression.
create function emgd.rejected(tbl text, msg text) returns boolean
    language plpgsql
    set search_path = ''
as $$
begin
    raise exception '%: %', tbl, msg using errcode = 'check_violation';
end
$$;

create function emgd.passes_nonnegative(tbl text, col text, val double precision)
    returns boolean
    language sql
as $$
    select coalesce(val >= 0 and val < 'Infinity'::double precision, true)
        or emgd.rejected(tbl, format('%s must be >= 0 and finite, got %s', col, val))
$$;

create function emgd.passes_fraction(tbl text, col text, val double precision)
    returns boolean
    language sql
as $$
    select coalesce(val >= 0 and val <= 1, true)
        or emgd.rejected(tbl, format('%s must be between 0 and 1, got %s', col, val))
$$;

create function emgd.passes_finite(tbl text, col text, val double precision)
    returns boolean
    language sql
as $$
    select coalesce(not (val = 'NaN'::double precision or val in ('Infinity', '-Infinity')), true)
        or emgd.rejected(tbl, format('%s must be a finite number, got %s', col, val))
$$;

-- the statement forms keep their callers and now say each check once, through the above
create or replace function emgd.reject(tbl text, msg text) returns void
    language plpgsql
    set search_path = ''
as $$
begin
    perform emgd.rejected(tbl, msg);
end
$$;

create or replace function emgd.check_nonnegative(tbl text, col text, val double precision)
    returns void
    language plpgsql
    set search_path = ''
as $$
begin
    perform emgd.passes_nonnegative(tbl, col, val);
end
$$;

create or replace function emgd.check_fraction(tbl text, col text, val double precision)
    returns void
    language plpgsql
    set search_path = ''
as $$
begin
    perform emgd.passes_fraction(tbl, col, val);
end
$$;

create or replace function emgd.check_finite(tbl text, col text, val double precision)
    returns void
    language plpgsql
    set search_path = ''
as $$
begin
    perform emgd.passes_finite(tbl, col, val);
end
$$;

-- as emgd.check_*: the table owner and the service role only
revoke all on function emgd.rejected(text, text) from public;
revoke all on function emgd.passes_nonnegative(text, text, double precision) from public;
revoke all on function emgd.passes_fraction(text, text, double precision) from public;
revoke all on function emgd.passes_finite(text, text, double precision) from public;
grant execute on function emgd.rejected(text, text) to service_role;
grant execute on function emgd.passes_nonnegative(text, text, double precision) to service_role;
grant execute on function emgd.passes_fraction(text, text, double precision) to service_role;
grant execute on function emgd.passes_finite(text, text, double precision) to service_role;

-- The checks and their order are those of 20261125120000_emgd_schema.sql; the IF conditions
-- were simple expressions already, so only the PERFORMs changed.
create or replace function emgd.validate_session() returns trigger
    language plpgsql
    set search_path = ''
as $$
declare
    t constant text := 'sessions';
    ok boolean;
begin
    if new.status not in ('pending', 'processing', 'completed', 'failed') then
        perform emgd.reject(t, format(
            'status must be one of pending, processing, completed, failed; got %L', new.status));
    end if;
    if new.stage not in ('queued', 'downloading', 'analysing', 'saving', 'done', 'failed')
    then
        perform emgd.reject(t, format(
            'stage must be one of queued, downloading, analysing, saving, done, failed; '
            'got %L', new.stage));
    end if;
    ok := emgd.passes_fraction(t, 'progress', new.progress);
    if new.file_size is not null and new.file_size < 0 then
        perform emgd.reject(t, format('file_size must be >= 0, got %s', new.file_size));
    end if;
    if new.content_sha256 is not null and new.content_sha256 !~ '^[0-9a-f]{64}$' then
        perform emgd.reject(t, format(
            'content_sha256 must be 64 lowercase hex digits, got %L', new.content_sha256));
    end if;
    ok := emgd.passes_nonnegative(t, 'duration_s', new.duration_s)
        and emgd.passes_nonnegative(t, 'game_duration', new.game_duration)
        and emgd.passes_finite(t, 'game_score', new.game_score)
        and emgd.passes_fraction(t, 'overall_compliance', new.overall_compliance)
        and emgd.passes_fraction(t, 'symmetry', new.symmetry);
    return new;
end
$$;

-- The checks and their order are those of 20261130120000_channel_quality.sql.
create or replace function emgd.validate_session_parameters() returns trigger
    language plpgsql
    set search_path = ''
as $$
declare
    t constant text := 'session_parameters';
    missing text[];
    ok boolean;
begin
    if new.sampling_rate is null or not (new.sampling_rate > 0
        and new.sampling_rate < 'Infinity'::double precision) then
        perform emgd.reject(t, format('sampling_rate must be > 0, got %s', new.sampling_rate));
    end if;

    -- A usable channel has every count; an unusable one says why it has none.
    if new.usable then
        missing := array_remove(array[
            case when new.mvc_value is null then 'mvc_value' end,
            case when new.mvc_threshold is null then 'mvc_threshold' end,
            case when new.contractions_total is null then 'contractions_total' end,
            case when new.contractions_good is null then 'contractions_good' end,
            case when new.contractions_mvc_compliant is null then 'contractions_mvc_compliant' end,
            case when new.contractions_duration_compliant is null
                then 'contractions_duration_compliant' end,
            case when new.completion_rate is null then 'completion_rate' end,
            case when new.intensity_rate is null then 'intensity_rate' end,
            case when new.duration_rate is null then 'duration_rate' end,
            case when new.compliance_rate is null then 'compliance_rate' end,
            case when new.time_under_tension_ms is null then 'time_under_tension_ms' end
        ], null);
        if cardinality(missing) > 0 then
            perform emgd.reject(t, format(
                'a usable channel must have %s (only an unusable channel may leave them NULL)',
                array_to_string(missing, ', ')));
        end if;
    elsif new.usable = false and coalesce(cardinality(new.warnings), 0) = 0 then
        perform emgd.reject(t, 'an unusable channel must have at least one warning saying why');
    end if;
    -- The exact test of the warnings is a query; it runs only when the elements, NULL as '',
    -- each between two U+0001, show a blank one (or one holding U+0001 that looks blank).
    if new.warnings is not null and cardinality(new.warnings) > 0
        and (E'\x01' || array_to_string(new.warnings, E'\x01', '') || E'\x01') ~ E'\x01 *\x01'
    then
        if exists (select 1 from unnest(new.warnings) w where coalesce(btrim(w), '') = '') then
            perform emgd.reject(t, format('warnings must not be empty or NULL, got %s',
                new.warnings));
        end if;
    end if;

    -- NULL counts (an unusable channel) pass these checks: each only judges a value it is given.
    ok := emgd.passes_nonnegative(t, 'mvc_value', new.mvc_value)
        and emgd.passes_nonnegative(t, 'mvc_threshold', new.mvc_threshold)
        and emgd.passes_nonnegative(t, 'duration_threshold_ms', new.duration_threshold_ms)
        and emgd.passes_nonnegative(t, 'expected_contractions', new.expected_contractions)
        and emgd.passes_nonnegative(t, 'contractions_total', new.contractions_total)
        and emgd.passes_nonnegative(t, 'contractions_good', new.contractions_good)
        and emgd.passes_nonnegative(t, 'contractions_mvc_compliant',
            new.contractions_mvc_compliant)
        and emgd.passes_nonnegative(t, 'contractions_duration_compliant',
            new.contractions_duration_compliant);
    if new.contractions_good > new.contractions_total
        or new.contractions_mvc_compliant > new.contractions_total
        or new.contractions_duration_compliant > new.contractions_total then
        perform emgd.reject(t, format(
            'good (%s), mvc-compliant (%s) and duration-compliant (%s) contractions cannot '
            'exceed contractions_total (%s)', new.contractions_good,
            new.contractions_mvc_compliant, new.contractions_duration_compliant,
            new.contractions_total));
    end if;
    ok := emgd.passes_fraction(t, 'completion_rate', new.completion_rate)
        and emgd.passes_fraction(t, 'intensity_rate', new.intensity_rate)
        and emgd.passes_fraction(t, 'duration_rate', new.duration_rate)
        and emgd.passes_fraction(t, 'compliance_rate', new.compliance_rate)
        and emgd.passes_fraction(t, 'signal_quality', new.signal_quality)
        and emgd.passes_fraction(t, 'activation_agreement', new.activation_agreement)
        and emgd.passes_nonnegative(t, 'time_under_tension_ms', new.time_under_tension_ms)
        and emgd.passes_nonnegative(t, 'rms', new.rms)
        and emgd.passes_nonnegative(t, 'mav', new.mav)
        and emgd.passes_nonnegative(t, 'mpf_hz', new.mpf_hz)
        and emgd.passes_nonnegative(t, 'mdf_hz', new.mdf_hz)
        and emgd.passes_finite(t, 'fi_nsm5', new.fi_nsm5)
        and emgd.passes_finite(t, 'fi_nsm5_relative', new.fi_nsm5_relative)
        and emgd.passes_finite(t, 'mpf_slope_hz_per_s', new.mpf_slope_hz_per_s)
        and emgd.passes_finite(t, 'mdf_slope_hz_per_s', new.mdf_slope_hz_per_s)
        and emgd.passes_finite(t, 'mpf_slope_pct_per_s', new.mpf_slope_pct_per_s)
        and emgd.passes_finite(t, 'mdf_slope_pct_per_s', new.mdf_slope_pct_per_s);

    -- artefact, mains and detection levels
    ok := emgd.passes_nonnegative(t, 'masked_samples', new.masked_samples)
        and emgd.passes_nonnegative(t, 'masked_s', new.masked_s);
    if new.mains_hz is not null
        and not (new.mains_hz > 0 and new.mains_hz < 'Infinity'::double precision) then
        perform emgd.reject(t, format('mains_hz must be > 0 and finite, got %s', new.mains_hz));
    end if;
    ok := emgd.passes_fraction(t, 'mains_fraction', new.mains_fraction)
        and emgd.passes_nonnegative(t, 'rest_level', new.rest_level)
        and emgd.passes_nonnegative(t, 'onset_level', new.onset_level)
        and emgd.passes_nonnegative(t, 'offset_level', new.offset_level);
    -- A contraction starts above where it ends, and ends at or above rest (hysteresis); each
    -- pair is judged when both are given.
    if new.onset_level < new.offset_level or new.offset_level < new.rest_level
        or new.onset_level < new.rest_level then
        perform emgd.reject(t, format(
            'levels must satisfy onset_level (%s) >= offset_level (%s) >= rest_level (%s)',
            new.onset_level, new.offset_level, new.rest_level));
    end if;
    ok := emgd.passes_nonnegative(t, 'mvc_start_ms', new.mvc_start_ms)
        and emgd.passes_nonnegative(t, 'mvc_end_ms', new.mvc_end_ms);
    if not (new.mvc_end_ms > new.mvc_start_ms) then
        perform emgd.reject(t, format('mvc_end_ms (%s) must be greater than mvc_start_ms (%s)',
            new.mvc_end_ms, new.mvc_start_ms));
    end if;
    return new;
end
$$;

-- The checks and their order are those of 20261130120000_channel_quality.sql.
create or replace function emgd.validate_contraction() returns trigger
    language plpgsql
    set search_path = ''
as $$
declare
    t constant text := 'contractions';
    ok boolean;
begin
    if new.contraction_index < 0 then
        perform emgd.reject(t, format('contraction_index must be >= 0, got %s',
            new.contraction_index));
    end if;
    ok := emgd.passes_nonnegative(t, 'start_ms', new.start_ms)
        and emgd.passes_finite(t, 'end_ms', new.end_ms);
    if not (new.end_ms > new.start_ms) then
        perform emgd.reject(t, format('end_ms (%s) must be greater than start_ms (%s)',
            new.end_ms, new.start_ms));
    end if;
    -- duration_ms must equal end_ms - start_ms; the tolerance (1 microsecond) only absorbs
    -- floating point rounding, never a different definition of duration.
    if not (abs(new.duration_ms - (new.end_ms - new.start_ms)) <= 1e-3) then
        perform emgd.reject(t, format(
            'duration_ms (%s) must equal end_ms - start_ms (%s)',
            new.duration_ms, new.end_ms - new.start_ms));
    end if;
    ok := emgd.passes_nonnegative(t, 'peak_amplitude', new.peak_amplitude)
        and emgd.passes_nonnegative(t, 'mean_amplitude', new.mean_amplitude)
        and emgd.passes_nonnegative(t, 'mpf_hz', new.mpf_hz)
        and emgd.passes_nonnegative(t, 'mdf_hz', new.mdf_hz)
        and emgd.passes_finite(t, 'mpf_slope_hz_per_s', new.mpf_slope_hz_per_s)
        and emgd.passes_finite(t, 'mdf_slope_hz_per_s', new.mdf_slope_hz_per_s);
    return new;
end
$$;

-- ---------------------------------------------------------------------------------------------
-- one new session row version per committed result
-- ---------------------------------------------------------------------------------------------

-- What the app is shown of a job in each state, said once: emgd.jobs_sync writes it as the job
-- moves, and emgd.complete_job writes a succeeded job's with its results. SQL without a SET
-- clause, so the planner inlines them (a succeeded job's values fold to constants).
create function emgd.session_status(p_state text) returns text
    language sql immutable
as $$
    select case p_state
        when 'pending' then 'pending'
        when 'running' then 'processing'
        when 'succeeded' then 'completed'
        else 'failed' end
$$;

create function emgd.session_stage(p_state text) returns text
    language sql immutable
as $$
    select case p_state
        when 'pending' then 'queued'
        when 'running' then 'downloading'
        when 'succeeded' then 'done'
        else 'failed' end
$$;

create function emgd.session_progress(p_state text) returns real
    language sql immutable
as $$
    select case p_state when 'succeeded' then 1 else 0 end::real
$$;

revoke all on function emgd.session_status(text) from public;
revoke all on function emgd.session_stage(text) from public;
revoke all on function emgd.session_progress(text) from public;

-- The session follows its job as before; a session that already shows what the job's state
-- means (emgd.complete_job wrote it with the results) is not written again.
create or replace function emgd.jobs_sync() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
declare
    v_status text;
    v_stage text;
    v_progress real;
    v_error text;
begin
    if tg_op = 'UPDATE' and new.state is not distinct from old.state
        and new.last_error is not distinct from old.last_error
        and new.object_version is not distinct from old.object_version then
        return null;
    end if;

    if tg_op = 'INSERT' or new.state is distinct from old.state
        or new.last_error is distinct from old.last_error then
        v_status := emgd.session_status(new.state);
        v_stage := emgd.session_stage(new.state);
        v_progress := emgd.session_progress(new.state);
        v_error := case when new.state in ('failed', 'quarantined')
            then emgd.error_for_people(new.last_error, new.state) end;
        update public.sessions s set
            status = v_status,
            stage = v_stage,
            progress = v_progress,
            error = v_error
        where s.id = new.session_id
          and (s.status, s.stage, s.progress, s.error)
              is distinct from (v_status, v_stage, v_progress, v_error);
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

-- The body of 20261130180000_complete_job_bookkeeping.sql; the results UPDATE also sets what
-- emgd.jobs_sync sets for a succeeded job (its status, stage and progress, and no error), so the
-- job's own UPDATE below leaves the session as it is.
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
        status = emgd.session_status('succeeded'),
        stage = emgd.session_stage('succeeded'),
        progress = emgd.session_progress('succeeded'),
        error = null,
        processed_at = now()
    where s.id = j.session_id;

    insert into public.session_parameters (
        session_id, name, sampling_rate, unit, mvc_value, mvc_threshold, mvc_method,
        duration_threshold_ms, expected_contractions, contractions_total, contractions_good,
        contractions_mvc_compliant, contractions_duration_compliant, completion_rate, intensity_rate,
        duration_rate, compliance_rate, time_under_tension_ms, rms, mav, mpf_hz, mdf_hz, fi_nsm5,
        fi_nsm5_relative, mpf_slope_hz_per_s, mdf_slope_hz_per_s, mpf_slope_pct_per_s,
        mdf_slope_pct_per_s, signal_quality, activation_agreement, processing,
        usable, warnings, masked_samples, masked_s, mains_hz, mains_fraction, mains_removed,
        rest_level, onset_level, offset_level, mvc_source, mvc_start_ms, mvc_end_ms, fatigue_reason
    )
    select j.session_id, c.name, c.sampling_rate, c.unit, c.mvc_value, c.mvc_threshold, c.mvc_method,
        c.duration_threshold_ms, c.expected_contractions, c.contractions_total, c.contractions_good,
        c.contractions_mvc_compliant, c.contractions_duration_compliant, c.completion_rate,
        c.intensity_rate, c.duration_rate, c.compliance_rate, c.time_under_tension_ms, c.rms, c.mav,
        c.mpf_hz, c.mdf_hz, c.fi_nsm5, c.fi_nsm5_relative, c.mpf_slope_hz_per_s, c.mdf_slope_hz_per_s,
        c.mpf_slope_pct_per_s, c.mdf_slope_pct_per_s, c.signal_quality, c.activation_agreement,
        p_result -> 'processing',
        coalesce(c.usable, true), coalesce(c.warnings, '{}'), coalesce(c.masked_samples, 0),
        coalesce(c.masked_s, 0), c.mains_hz, coalesce(c.mains_fraction, 0),
        coalesce(c.mains_removed, false), c.rest_level, c.onset_level, c.offset_level,
        c.mvc_source, c.mvc_start_ms, c.mvc_end_ms, c.fatigue_reason
    from jsonb_populate_recordset(null::public.session_parameters, p_result -> 'channels') c;

    insert into public.contractions (
        session_id, channel, contraction_index, start_ms, end_ms, duration_ms, peak_amplitude,
        mean_amplitude, meets_mvc, meets_duration, is_good, mpf_hz, mdf_hz,
        mpf_slope_hz_per_s, mdf_slope_hz_per_s
    )
    select j.session_id, ch ->> 'name', (k ->> 'index')::int, (k ->> 'start_ms')::double precision,
        (k ->> 'end_ms')::double precision, (k ->> 'duration_ms')::double precision,
        (k ->> 'peak_amplitude')::double precision, (k ->> 'mean_amplitude')::double precision,
        (k ->> 'meets_mvc')::boolean, (k ->> 'meets_duration')::boolean, (k ->> 'is_good')::boolean,
        (k ->> 'mpf_hz')::double precision, (k ->> 'mdf_hz')::double precision,
        (k ->> 'mpf_slope_hz_per_s')::double precision, (k ->> 'mdf_slope_hz_per_s')::double precision
    from jsonb_array_elements(p_result -> 'channels') ch
    cross join lateral jsonb_array_elements(coalesce(ch -> 'contractions', '[]'::jsonb)) k;

    -- finished_at and the lease are emgd.jobs_guard's to set on the way to succeeded
    update emgd.jobs set state = 'succeeded', last_error = null where id = j.id;
    return true;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- the processing record
-- ---------------------------------------------------------------------------------------------

-- Every result stores its processing record (about 5 kB of JSON) in the session and in each of
-- its channels; compressing it with pglz took about as long as all the rest of the UPDATE.
-- lz4 compresses it several times faster and reads back the same value. Rows already stored keep
-- pglz until they are written again. A server built without lz4 keeps its default.
do $$
begin
    alter table public.sessions alter column processing set compression lz4;
    alter table public.session_parameters alter column processing set compression lz4;
exception when feature_not_supported or invalid_parameter_value then
    raise notice 'lz4 is not available here; processing stays compressed with %',
        current_setting('default_toast_compression');
end
$$;

-- ---------------------------------------------------------------------------------------------
-- the stage and reuse calls
-- ---------------------------------------------------------------------------------------------

create or replace function emgd.set_stage(
    p_job_id bigint, p_token uuid, p_stage text, p_progress real default null
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
    j emgd.jobs;
    ignored text;
begin
    ignored := set_config('synchronous_commit', 'off', true);
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
    ignored text;
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
        ignored := set_config('synchronous_commit', 'off', true);  -- only a row lock was taken
        return false;
    end if;
    return emgd.complete_job(p_job_id, p_token, emgd.session_result(src), p_sha256, p_size);
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- analysis options
-- ---------------------------------------------------------------------------------------------

-- The body of 20261130150000_therapist_settings.sql in one query where it can be: the session,
-- its base settings (the same row the base query picks) and whether any channel can have options
-- of its own (a settings row naming a channel, or another session of the patient marked as the
-- MVC reference). Most sessions have none of those; then the channel query, the costly one,
-- would find no channel and is not run.
create or replace function emgd.analysis_options(p_session_id uuid)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    s public.sessions;
    base public.patient_emg_settings;
    channels jsonb := '{}'::jsonb;
    r record;
    named_channels boolean;
begin
    select x.id, x.patient_id,
        b.patient_id, b.mvc_value, b.mvc_unit, b.mvc_percentage, b.duration_threshold_ms,
        b.expected_contractions,
        exists (
            select 1 from public.patient_emg_settings p
            where p.channel is not null
              and (p.patient_id = x.patient_id or p.patient_id is null))
        or exists (
            select 1 from public.sessions ref
            where ref.patient_id = x.patient_id and ref.mvc_reference and ref.id <> x.id)
    into s.id, s.patient_id,
        base.patient_id, base.mvc_value, base.mvc_unit, base.mvc_percentage,
        base.duration_threshold_ms, base.expected_contractions,
        named_channels
    from public.sessions x
    left join lateral (
        select p.* from public.patient_emg_settings p
        where p.channel is null and (p.patient_id = x.patient_id or p.patient_id is null)
        order by p.patient_id nulls last limit 1) b on true
    where x.id = p_session_id;
    if s.id is null then
        return null;
    end if;

    if named_channels then
        for r in
            with labels as (
                select p.channel as name from public.patient_emg_settings p
                where p.channel is not null
                  and (p.patient_id = s.patient_id or p.patient_id is null)
                union
                select sp.name from public.sessions ref
                join public.session_parameters sp on sp.session_id = ref.id
                where ref.patient_id = s.patient_id and ref.mvc_reference and ref.id <> s.id
                  and sp.usable and sp.mvc_value > 0
            )
            select l.name,
                spec.mvc_percentage, spec.duration_threshold_ms, spec.expected_contractions,
                own.mvc_value as own_mvc, own.mvc_unit as own_unit,
                ref.mvc_value as ref_mvc, ref.unit as ref_unit
            from labels l
            left join lateral (
                select p.* from public.patient_emg_settings p
                where p.channel = l.name
                  and (p.patient_id = s.patient_id or p.patient_id is null)
                order by p.patient_id nulls last limit 1) spec on true
            left join lateral (
                select p.mvc_value, p.mvc_unit from public.patient_emg_settings p
                where p.patient_id = s.patient_id and p.mvc_value is not null
                  and (p.channel = l.name or p.channel is null)
                order by p.channel nulls last limit 1) own on true
            left join lateral (
                select sp.mvc_value, sp.unit from public.sessions rs
                join public.session_parameters sp on sp.session_id = rs.id and sp.name = l.name
                where rs.patient_id = s.patient_id and rs.mvc_reference and rs.id <> s.id
                  and sp.usable and sp.mvc_value > 0) ref on true
            order by l.name
        loop
            channels := channels || jsonb_build_object(r.name, jsonb_strip_nulls(
                jsonb_build_object(
                    'mvc_percentage', r.mvc_percentage,
                    'duration_threshold_ms', r.duration_threshold_ms,
                    'expected_contractions', r.expected_contractions,
                    'mvc_value', coalesce(r.own_mvc, r.ref_mvc),
                    'mvc_unit', case when r.own_mvc is not null then r.own_unit
                                     else r.ref_unit end,
                    'mvc_method', case when r.own_mvc is not null then 'patient_settings'
                                       when r.ref_mvc is not null then 'reference_session'
                                  end)));
        end loop;
    end if;

    -- a patient-wide MVC (channel NULL) applies to every channel not named above: "*"
    if base.patient_id is not null and base.mvc_value is not null then
        channels := channels || jsonb_build_object('*', jsonb_build_object(
            'mvc_value', base.mvc_value, 'mvc_unit', base.mvc_unit,
            'mvc_method', 'patient_settings'));
    end if;
    return jsonb_build_object(
        'mvc_percentage', coalesce(base.mvc_percentage, 75),
        'duration_threshold_ms', coalesce(base.duration_threshold_ms, 2000),
        'expected_contractions', coalesce(base.expected_contractions, 12),
        'channels', channels);
end
$$;
