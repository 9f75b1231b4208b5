-- Results for a whole batch in one statement per table.
--
-- emgd.complete_jobs wrote a batch job by job: each element ran emgd.complete_job in a
-- subtransaction of its own, seven statements and a dozen trigger calls each. On a busy daemon the
-- database spent more on starting those statements (planning, executor set-up, the subtransaction,
-- the SET of each SECURITY DEFINER call) than on the rows they wrote.
--
-- emgd.complete_many writes every element of a batch with one statement per table: the same
-- lease check, the same deletes, updates and inserts, in the same order, and every row still
-- passes its table's triggers. It raises on the first refused row. emgd.complete_jobs tries the
-- whole batch that way; only when something is refused does it roll that attempt back and write
-- each element on its own, as before, so a refused result still costs its own job only. A single
-- result (emgd.complete_job, and emgd.reuse_results through it) is a batch of one: the columns
-- a result fills are written down once, here.

create function emgd.complete_many(
    p_job_ids bigint[], p_tokens uuid[], p_results jsonb[], p_sha256 text[], p_sizes bigint[]
)
returns table (n int, ok boolean)
language plpgsql
security definer
set search_path = ''
-- Every statement below finds a batch's rows by key, whatever the batch's size: its plan is made
-- once per connection and kept (a custom plan per call, which the batch's arrays would otherwise
-- ask for, costs more than a small batch's writes), and it uses the keys' indexes even when it
-- was made while a table was still small (a sequential scan chosen then would read the whole
-- table for every batch once it has grown).
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
    live int[];
    ids bigint[];
    sessions uuid[];
begin
    -- The elements whose lease still holds (emgd.lock_leased_job's test), locked in job id order
    -- so that two batches never lock jobs in opposite orders.
    select coalesce(array_agg(x.n order by x.id), '{}'),
        coalesce(array_agg(x.id order by x.id), '{}'),
        coalesce(array_agg(x.session_id order by x.id), '{}')
    into live, ids, sessions
    from (
        select e.n, j.id, j.session_id
        from (
            select * from unnest(p_job_ids, p_tokens) with ordinality as u(id, token, n)
            order by u.id
        ) e
        cross join lateral (
            select j.id, j.session_id from emgd.jobs j
            where j.id = e.id and j.lease_token = e.token and j.state = 'running'
              and j.lease_expires_at > clock_timestamp()
            for update
        ) j
    ) x;

    if cardinality(live) > 0 then
        delete from public.contractions c where c.session_id = any (sessions);
        delete from public.session_parameters sp where sp.session_id = any (sessions);

        update public.sessions s
        set content_sha256 = r.sha256,
            file_size = r.size,
            recorded_at = (r.result ->> 'recorded_at')::timestamptz,
            duration_s = (r.result ->> 'duration_s')::double precision,
            game_name = r.meta ->> 'game_name',
            game_level = (r.meta ->> 'game_level')::int,
            game_duration = (r.meta ->> 'game_duration')::double precision,
            game_therapist_id = r.meta ->> 'therapist_id',
            player_name = r.meta ->> 'player_name',
            game_score = (r.meta ->> 'game_score')::double precision,
            metadata = r.meta,
            analysis_version = r.result ->> 'analysis_version',
            processing = r.result -> 'processing',
            overall_compliance = (r.result ->> 'overall_compliance')::double precision,
            symmetry = (r.result ->> 'symmetry')::double precision,
            status = emgd.session_status('succeeded'),
            stage = emgd.session_stage('succeeded'),
            progress = emgd.session_progress('succeeded'),
            error = null,
            processed_at = now()
        from (
            select l.session_id, e.result, e.sha256, e.size,
                coalesce(e.result -> 'metadata', '{}'::jsonb) as meta
            from unnest(live, sessions) as l(i, session_id)
            join unnest(p_results, p_sha256, p_sizes) with ordinality as e(result, sha256, size, n)
                on e.n = l.i
        ) r
        where s.id = r.session_id;

        insert into public.session_parameters (
            session_id, name, sampling_rate, unit, mvc_value, mvc_threshold, mvc_method,
            duration_threshold_ms, expected_contractions, contractions_total, contractions_good,
            contractions_mvc_compliant, contractions_duration_compliant, completion_rate,
            intensity_rate, duration_rate, compliance_rate, time_under_tension_ms, rms, mav,
            mpf_hz, mdf_hz, fi_nsm5, fi_nsm5_relative, mpf_slope_hz_per_s, mdf_slope_hz_per_s,
            mpf_slope_pct_per_s, mdf_slope_pct_per_s, signal_quality, activation_agreement,
            processing, usable, warnings, masked_samples, masked_s, mains_hz, mains_fraction,
            mains_removed, rest_level, onset_level, offset_level, mvc_source, mvc_start_ms,
            mvc_end_ms, fatigue_reason
        )
        select l.session_id, c.name, c.sampling_rate, c.unit, c.mvc_value, c.mvc_threshold,
            c.mvc_method, c.duration_threshold_ms, c.expected_contractions, c.contractions_total,
            c.contractions_good, c.contractions_mvc_compliant, c.contractions_duration_compliant,
            c.completion_rate, c.intensity_rate, c.duration_rate, c.compliance_rate,
            c.time_under_tension_ms, c.rms, c.mav, c.mpf_hz, c.mdf_hz, c.fi_nsm5,
            c.fi_nsm5_relative, c.mpf_slope_hz_per_s, c.mdf_slope_hz_per_s, c.mpf_slope_pct_per_s,
            c.mdf_slope_pct_per_s, c.signal_quality, c.activation_agreement,
            e.result -> 'processing',
            coalesce(c.usable, true), coalesce(c.warnings, '{}'), coalesce(c.masked_samples, 0),
            coalesce(c.masked_s, 0), c.mains_hz, coalesce(c.mains_fraction, 0),
            coalesce(c.mains_removed, false), c.rest_level, c.onset_level, c.offset_level,
            c.mvc_source, c.mvc_start_ms, c.mvc_end_ms, c.fatigue_reason
        from unnest(live, sessions) with ordinality as l(i, session_id, o)
        join unnest(p_results) with ordinality as e(result, n) on e.n = l.i
        cross join lateral jsonb_populate_recordset(
            null::public.session_parameters, e.result -> 'channels') with ordinality c
        order by l.o, c.ordinality;

        insert into public.contractions (
            session_id, channel, contraction_index, start_ms, end_ms, duration_ms,
            peak_amplitude, mean_amplitude, meets_mvc, meets_duration, is_good, mpf_hz, mdf_hz,
            mpf_slope_hz_per_s, mdf_slope_hz_per_s
        )
        select l.session_id, ch ->> 'name', (k ->> 'index')::int,
            (k ->> 'start_ms')::double precision, (k ->> 'end_ms')::double precision,
            (k ->> 'duration_ms')::double precision, (k ->> 'peak_amplitude')::double precision,
            (k ->> 'mean_amplitude')::double precision, (k ->> 'meets_mvc')::boolean,
            (k ->> 'meets_duration')::boolean, (k ->> 'is_good')::boolean,
            (k ->> 'mpf_hz')::double precision, (k ->> 'mdf_hz')::double precision,
            (k ->> 'mpf_slope_hz_per_s')::double precision,
            (k ->> 'mdf_slope_hz_per_s')::double precision
        from unnest(live, sessions) with ordinality as l(i, session_id, o)
        join unnest(p_results) with ordinality as e(result, n) on e.n = l.i
        cross join lateral jsonb_array_elements(e.result -> 'channels') with ordinality
            as chs(ch, co)
        cross join lateral jsonb_array_elements(coalesce(ch -> 'contractions', '[]'::jsonb))
            with ordinality as ks(k, ko)
        order by l.o, chs.co, ks.ko;

        -- finished_at and the lease are emgd.jobs_guard's to set on the way to succeeded
        update emgd.jobs j set state = 'succeeded', last_error = null where j.id = any (ids);
    end if;

    return query
    select e.n::int, e.n = any (live)
    from generate_subscripts(p_job_ids, 1) as e(n);
end;
$$;

-- One result: a batch of one.
create or replace function emgd.complete_job(
    p_job_id bigint, p_token uuid, p_result jsonb, p_sha256 text, p_size bigint
)
returns boolean
language sql
security definer
set search_path = ''
as $$
    select c.ok from emgd.complete_many(
        array[p_job_id], array[p_token], array[p_result], array[p_sha256], array[p_size]) c
$$;

-- The whole batch at once; when a row is refused, each element on its own (its error its own).
create or replace function emgd.complete_jobs(
    p_job_ids bigint[], p_tokens uuid[], p_results jsonb[], p_sha256 text[], p_sizes bigint[]
)
returns table (n int, job_id bigint, ok boolean, err_code text, err_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
    i int;
    written boolean[];
begin
    begin
        -- Collected first: rows returned from inside the block would outlive its rollback.
        select array_agg(c.ok order by c.n) into written
        from emgd.complete_many(p_job_ids, p_tokens, p_results, p_sha256, p_sizes) c;
    exception when others then
        written := null;  -- undone: each element again, on its own
    end;
    for i in select o from unnest(p_job_ids) with ordinality as u(id, o) order by u.id loop
        n := i;
        job_id := p_job_ids[i];
        err_code := null;
        err_message := null;
        if written is not null then
            ok := written[i];
        else
            begin
                ok := emgd.complete_job(p_job_ids[i], p_tokens[i], p_results[i], p_sha256[i],
                    p_sizes[i]);
            exception when others then
                ok := null;
                err_code := sqlstate;
                err_message := sqlerrm;
            end;
        end if;
        return next;
    end loop;
end;
$$;

revoke all on function emgd.complete_many(bigint[], uuid[], jsonb[], text[], bigint[]) from public;
revoke all on function emgd.complete_job(bigint, uuid, jsonb, text, bigint) from public;
revoke all on function emgd.complete_jobs(bigint[], uuid[], jsonb[], text[], bigint[]) from public;
grant execute on function emgd.complete_job(bigint, uuid, jsonb, text, bigint) to service_role;
grant execute on function emgd.complete_jobs(bigint[], uuid[], jsonb[], text[], bigint[])
    to service_role;
